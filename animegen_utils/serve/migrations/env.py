"""Alembic environment: runs on the connection that ``records.upgrade`` hands over.

Online mode only takes a connection from ``config.attributes["connection"]`` (so a
password with ``%`` in the URL never goes through configparser); offline mode
(``db upgrade --sql``) prints the SQL for the URL's dialect instead.
"""

from alembic import context

from animegen_utils.serve.records import Base

config = context.config

if context.is_offline_mode():
    context.configure(
        url=config.attributes["url"],
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "Run these migrations with `python -m animegen_utils.serve db upgrade` "
            "or animegen_utils.serve.records.upgrade(url), not the alembic CLI."
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite can't ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
