"""Index changes that do not stop the fleet: what a revision adding an index to a live table uses.

On PostgreSQL a plain ``CREATE INDEX`` holds a lock that blocks every write to the table
until the index is built: minutes on a large ``operations`` table, during which no operation
can be created, claimed or recorded. These helpers build and drop indexes ``CONCURRENTLY``
there, outside the migration's transaction (PostgreSQL refuses it inside one). A concurrent
build that fails (a unique violation, a cancelled ``migrate``) leaves an *invalid* index
behind while the revision stays unapplied: the build drops such a leftover first, and keeps a
valid index of the same name (another ``migrate`` built it meanwhile; its version update then
settles which of the two records the revision). Dropping tolerates an index already gone (a
downgrade interrupted after its drop). SQLite has no concurrent build and none is needed
there (one writer, and the index is built in the migration's transaction).

Revisions import these helpers, never the live schema: what a revision does must not change
when the schema module does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

__all__ = ["create_index", "drop_index"]


def create_index(
    name: str,
    table: str,
    columns: Sequence[str | sa.TextClause],
    *,
    where: sa.TextClause | None = None,
) -> None:
    """Create index ``name`` on ``table`` (partial when ``where`` is given)."""
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(name, table, list(columns), sqlite_where=where)
        return
    with op.get_context().autocommit_block():
        valid = (
            op.get_bind()
            .execute(
                sa.text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
                ),
                {"name": name},
            )
            .scalar()
        )
        if valid is False:  # the leftover of an interrupted concurrent build
            op.execute(sa.text(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'))
        op.create_index(
            name,
            table,
            list(columns),
            postgresql_where=where,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def drop_index(name: str, table: str) -> None:
    """Drop index ``name`` of ``table``."""
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(name, table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table, postgresql_concurrently=True, if_exists=True)
