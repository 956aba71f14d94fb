"""Alembic migrations of the store; run them with service.store.migrate.upgrade(engine)."""
