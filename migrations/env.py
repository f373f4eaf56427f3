"""Alembic environment: the URL comes from Touchline's settings unless the caller
passes a connection (the tests and ``touchline migrate`` do)."""

from __future__ import annotations

from alembic import context

from services.wiring.models import metadata
from shared.db import make_engine
from shared.settings import get_settings

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(get_settings())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `touchline migrate` against a database")
run_migrations_online()
