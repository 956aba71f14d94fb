"""Check's shortcuts, each implementing the port it wraps: the fact cache and CachedFacts (a
CheckFacts), the decision memo as RememberingChecker (a Checker), and the write counter the worker
processes of one server share. Stacked in the composition root (service/server.py)."""
