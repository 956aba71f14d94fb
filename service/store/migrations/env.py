"""Alembic environment. Runs only on a connection handed over by service.store.migrate (in
config.attributes["connection"]), already inside the transaction that migrate commits; there is
no alembic.ini and no offline (SQL script) mode."""

from alembic import context

from service.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run the migrations through service.store.migrate.upgrade(engine)")

context.configure(
    connection=connection,
    # Compared by autogenerate (and by the test that keeps models and migrations in step).
    target_metadata=Base.metadata,
    compare_type=True,
    # SQLite cannot ALTER most things; batch mode recreates the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)

with context.begin_transaction():
    context.run_migrations()
