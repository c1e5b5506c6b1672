"""Postgres: schema, engine, migrations."""

from tally.db.session import create_engine, ping
from tally.db.tables import metadata

__all__ = ["create_engine", "metadata", "ping"]
