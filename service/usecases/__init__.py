"""Use cases: verifier + repositories + domain, each inside one unit of work."""
