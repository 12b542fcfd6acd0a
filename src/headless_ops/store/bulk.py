"""Many rows through one statement, with their values converted once, by the dialect's rules.

SQLAlchemy's ``executemany()`` sends every row through the compiler's parameter machinery
(a dictionary per row, a lookup and a conversion per column, every timestamp formatted
again even when it is the same instant in every row). For the scheduler's batches — an
outcome and two history lines per operation — that machinery cost more CPU than everything
else an operation needs (docs/benchmarks.md). A :class:`Bulk` statement is compiled once
per dialect; its rows are tuples converted by the very bind processors SQLAlchemy would use
(so the stored values are the same on both engines), with each distinct value of a column
converted only once per batch, and handed to the driver's ``executemany()``.

On PostgreSQL a statement may instead come with its *array form*: the same change written
as one statement over ``unnest()`` of one array per column. ``executemany()`` still runs one
statement per row on the server (each one parsed, planned and executed), which made the
scheduler's claim, held under the claim lock, the part two workers could not share; one
statement for the whole batch costs PostgreSQL a fraction of that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeEngine

__all__ = ["Bulk"]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    #: One converter per column, in the order the statement's parameters take them.
    converters: tuple[Callable[[Any], Any] | None, ...]
    #: The row's columns in the statement's parameter order (positional drivers).
    order: tuple[int, ...] | None
    #: Parameter names, for drivers with named parameters.
    names: tuple[str, ...] | None


class Bulk:
    """An ``executemany()`` statement whose parameters are ``columns``, in that order.

    ``columns`` pairs each bound parameter's name with its column type (``None``: passed to
    the driver as it is — strings, integers, ``None``). Every bound parameter of ``statement``
    must be one of them.

    ``pg_arrays``: the same change as one PostgreSQL statement whose parameters
    (``%(name)b``, one per column; binary, which both ends convert far faster than arrays
    as text) are arrays of the batch's values, in row order; used
    instead of ``executemany()`` on PostgreSQL. It must change exactly the rows the
    statement would, and it counts them the same way; the rows of one batch must change
    distinct rows (with two for the same row, ``executemany`` applies both in turn, an
    ``UPDATE … FROM`` only one of them).
    """

    def __init__(
        self,
        statement: Executable,
        columns: Sequence[tuple[str, TypeEngine[Any] | None]],
        *,
        pg_arrays: str | None = None,
    ):
        self.statement = statement
        self.columns = tuple(columns)
        self.pg_arrays = pg_arrays
        if pg_arrays is not None:
            used = set(re.findall(r"%\((\w+)\)[sb]", pg_arrays))
            if used != {name for name, _ in self.columns}:
                raise ValueError(f"array form parameters {sorted(used)} are not the columns")
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        names = [name for name, _ in self.columns]
        bound = set(compiled.bind_names.values())
        if bound != set(names):
            raise ValueError(f"bulk statement parameters {sorted(bound)} are not {sorted(names)}")
        converters = [
            None if type_ is None else type_.dialect_impl(dialect).bind_processor(dialect)
            for _, type_ in self.columns
        ]
        if compiled.positional:
            order = tuple(names.index(name) for name in compiled.positiontup)
            return _Compiled(str(compiled), tuple(converters[i] for i in order), order, None)
        return _Compiled(str(compiled), tuple(converters), None, tuple(names))

    async def execute(self, conn: AsyncConnection, rows: Sequence[Sequence[Any]]) -> int:
        """Run the statement once per row (``executemany``); returns the rows it changed."""
        if not rows:
            return 0
        compiled = self._for(conn.dialect)
        columns = list(zip(*rows, strict=True))
        if compiled.order is not None:
            # Columns, not rows, into the statement's parameter order: one step per column.
            columns = [columns[i] for i in compiled.order]
        for index, convert in enumerate(compiled.converters):
            if convert is None:
                continue
            # Values repeat across a batch (one `now`, one worker): each distinct one is
            # converted once. Unhashable ones (JSON objects) are converted every time.
            memo: dict[tuple[type, Any], Any] = {}
            out = []
            for value in columns[index]:
                try:
                    key = (type(value), value)
                    converted = memo[key]
                except KeyError:
                    converted = memo[key] = convert(value)
                except TypeError:
                    converted = convert(value)
                out.append(converted)
            columns[index] = tuple(out)
        if self.pg_arrays is not None and conn.dialect.name == "postgresql":
            # Named parameters (psycopg), so the columns are still in the given order.
            assert compiled.order is None
            arrays = {name: list(col) for (name, _), col in zip(self.columns, columns, strict=True)}
            result = await conn.exec_driver_sql(self.pg_arrays, arrays)
            return int(result.rowcount or 0)
        if compiled.names is None:
            params: list[Any] = list(zip(*columns, strict=True))
        else:
            params = [
                dict(zip(compiled.names, row, strict=True)) for row in zip(*columns, strict=True)
            ]
        result = await conn.exec_driver_sql(compiled.sql, params)
        return int(result.rowcount or 0)
