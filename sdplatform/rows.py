"""Model instances from a hand-written SELECT, for the lookups every API request makes.

Django builds a query's SQL anew each time it runs, and for a short lookup that costs several
times PostgreSQL's answer: an API key with its organization and plan took 1.0 ms of CPU through
the ORM and 0.18 ms as one fixed statement (docs/benchmarks.md). `Selected` writes a model's
column list once; its `instance()` turns a slice of a result row into the model, through the same
converters and `Model.from_db` the ORM uses, so the instance is the one a queryset would give.
`fixed_cursor()` runs such statements prepared on PostgreSQL, so the server plans each once per
connection, not on every request.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)
Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


class Selected(Generic[M]):
    """Every concrete column of `model` under a table alias, and the instance back from a row."""

    def __init__(self, model: type[M], alias: str, after: Selected[Any] | None = None) -> None:
        """`after`: the model whose columns come just before these in the row (else none do)."""
        self.model = model
        self.start: int = 0 if after is None else after.start + len(after)
        self.fields = list(model._meta.concrete_fields)
        # A concrete field always has a column; the filter only tells the type checker so.
        columns = [field.column for field in self.fields if field.column]
        self.attnames = [field.attname for field in self.fields]
        quote = connection.ops.quote_name
        self.sql = ", ".join(f"{alias}.{quote(column)}" for column in columns)
        self.cols = [field.get_col(alias) for field in self.fields]
        # Per database connection (one per thread), as a queryset's compiler asks for them.
        self.converters: weakref.WeakKeyDictionary[
            BaseDatabaseWrapper, list[tuple[int, list[Converter]]]
        ] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self.fields)

    def is_null(self, row: Sequence[Any]) -> bool:
        """Whether the row holds no such model (its columns NULL, as an outer join leaves them)."""
        return all(value is None for value in row[self.start : self.start + len(self.fields)])

    def instance(self, row: Sequence[Any]) -> M:
        """The model from its columns in `row`, their values converted as the ORM does."""
        conn = connections[DEFAULT_DB_ALIAS]
        values = list(row[self.start : self.start + len(self.fields)])
        for index, converters in self.converters_for(conn):
            for convert in converters:
                values[index] = convert(values[index], self.cols[index], conn)
        return self.model.from_db(conn.alias, self.attnames, values)

    def converters_for(self, conn: BaseDatabaseWrapper) -> list[tuple[int, list[Converter]]]:
        found = self.converters.get(conn)
        if found is None:
            found = []
            for index, col in enumerate(self.cols):
                chain = conn.ops.get_db_converters(col) + col.get_db_converters(conn)
                if chain:
                    found.append((index, chain))
            self.converters[conn] = found
        return found


def fixed_cursor() -> CursorWrapper:
    """A cursor for a fixed statement: prepared once per connection on PostgreSQL.

    Its parameters are bound by the server (`%s` becomes `$1`), so a statement's text is the same
    on every run. SQLite plans cheaply and gets the plain cursor.
    """
    prepared = getattr(connection, "prepared_cursor", None)  # sdplatform/postgres/base.py
    return prepared() if prepared is not None else connection.cursor()


def compiled(model: type[Model], expression: Any) -> tuple[str, tuple[Any, ...]]:
    """An ORM expression over `model`'s table as SQL for the database in use, with its parameters.

    For a fixed statement that reads what only the ORM writes the same way on every database
    (a JSON field's keys, say): compile it once, then reuse the text on every run.
    """
    query = model._default_manager.all().query
    sql, params = query.get_compiler(connection=connection).compile(
        expression.resolve_expression(query)
    )
    return sql, tuple(params)


def db_value(model: type[Model], field: str, value: Any) -> Any:
    """`value` as the ORM would send it for `model.field` in a lookup (a datetime on SQLite)."""
    column = model._meta.get_field(field)
    assert isinstance(column, Field), f"{field} is a relation, not a column"
    return column.get_db_prep_value(value, connection)


def set_prefetched(instance: Model, related_name: str, objects: list[Any]) -> None:
    """Make `instance.<related_name>.all()` answer `objects` without a query.

    What `prefetch_related(related_name)` leaves on each instance: the related manager's queryset
    with its result filled in, under the relation's name, and the instance as each object's side
    of the foreign key (tests/test_rows.py checks that no query follows).
    """
    manager = getattr(instance, related_name)
    queryset = manager.get_queryset()
    queryset._result_cache = objects
    queryset._prefetch_done = True
    instance.__dict__.setdefault("_prefetched_objects_cache", {})[related_name] = queryset
    for obj in objects:
        setattr(obj, manager.field.name, instance)
