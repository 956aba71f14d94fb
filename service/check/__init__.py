"""The Check capability: requests in, decisions out, and the shortcuts that make it fast.

The core (service.py) plans, applies the limits, verifies, reads the facts and decides, knowing none
of its shortcuts. Each shortcut implements the port it wraps (ports.py) and lives in caching/; the
composition root (service/server.py) stacks them.
"""
