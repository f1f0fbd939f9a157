"""Alembic environment: the engine comes from the caller (hwrepo.adapters.db.engine.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from hwrepo.adapters.db.orm import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` run by hand: take the URL from the ini/-x option
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = create_engine(url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
