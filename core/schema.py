"""Database tables generated from the models, and keeping the database in step with them.

``build_metadata`` turns every non-abstract model into an SQLAlchemy Core ``Table`` (``id``
primary key, one column per stored field, foreign keys for Many2one, a table per Many2many
relation). ``sync`` compares that metadata with the live database through Alembic's
autogenerate comparison and applies what is additive (new tables, columns, indexes, unique
constraints) with Alembic operations. A change that would lose data (a column type change
that is not a widening) is refused with a message naming the column; columns the models no
longer declare are left in place, untouched, since another set of addons may still use them.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations

from .exceptions import RegistryError
from .fields import UNSET

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .models import BaseModel
    from .registry import Registry

_logger = logging.getLogger(__name__)
_UNIQUE = re.compile(r"^\s*unique\s*\(([\w\s,]+)\)\s*$", re.I)
# Type changes that keep every existing value: (old type name, new type name).
_WIDENINGS = {
    ("VARCHAR", "TEXT"),
    ("VARCHAR", "VARCHAR"),
    ("INTEGER", "BIGINT"),
    ("INTEGER", "FLOAT"),
    ("INTEGER", "DOUBLE PRECISION"),
    ("REAL", "FLOAT"),
    ("JSON", "JSONB"),
}


def build_metadata(registry: Registry) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    """Tables for all stored models, and the Many2many relation tables by name."""
    metadata = sa.MetaData()
    relations: dict[str, sa.Table] = {}
    stored = [m for m in registry.models.values() if not m._abstract]
    for model in stored:
        columns = [sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)]
        constraints = []
        for field in model._fields.values():
            if not field.column:
                continue
            if field.type == "many2one":
                comodel = registry[field.comodel_name]
                columns.append(field.sql_column(comodel._table))
            else:
                columns.append(field.sql_column())
                fill = constant_default(field)
                if fill is not None:
                    columns[-1].info["fill"] = fill
        for name, definition, message in model._sql_constraints:
            match = _UNIQUE.match(definition)
            if not match:
                raise RegistryError(
                    f"Model '{model._name}': SQL constraint '{name}' must be 'unique(col, ...)'; "
                    f"got {definition!r}. Use @api.constrains for other checks."
                )
            constraint_name = f"{model._table}_{name}"
            cols = [c.strip() for c in match.group(1).split(",")]
            constraints.append(sa.UniqueConstraint(*cols, name=constraint_name))
            columns_signature = ", ".join(f"{model._table}.{c}" for c in cols)
            registry.sql_constraint_messages[(constraint_name, columns_signature)] = message
        model._table_obj = sa.Table(model._table, metadata, *columns, *constraints)
    for model in stored:
        for field in model._fields.values():
            if field.type == "many2many" and field.relation not in relations:
                relations[field.relation] = _relation_table(metadata, registry, model, field)
    for model in registry.models.values():
        if model._abstract:
            model._table_obj = None  # type: ignore[assignment]
    return metadata, relations


def _relation_table(
    metadata: sa.MetaData, registry: Registry, model: type[BaseModel], field
) -> sa.Table:
    comodel = registry[field.comodel_name]
    return sa.Table(
        field.relation,
        metadata,
        sa.Column(
            field.column1,
            sa.Integer,
            sa.ForeignKey(f"{model._table}.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            field.column2,
            sa.Integer,
            sa.ForeignKey(f"{comodel._table}.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
    )


def pending_changes(connection: Connection, metadata: sa.MetaData) -> list:
    """Alembic's differences between the database and ``metadata``, limited to our tables."""
    ours = set(metadata.tables)

    def include_object(obj, name, type_, reflected, compare_to):
        if type_ == "table":
            return name in ours
        table = getattr(obj, "table", None)
        return table is None or table.name in ours

    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": include_object},
    )
    return compare_metadata(context, metadata)


def sync(connection: Connection, metadata: sa.MetaData) -> list[str]:
    """Create what the database lacks; refuse destructive changes. Returns what was done."""
    existing = set(sa.inspect(connection).get_table_names())
    new_tables = [t for t in metadata.sorted_tables if t.name not in existing]
    metadata.create_all(connection, tables=new_tables)
    done = [f"created table {t.name}" for t in new_tables]
    operations = Operations(MigrationContext.configure(connection))
    refused = []
    for diff in _flatten(pending_changes(connection, metadata)):
        kind = diff[0]
        if kind == "add_column":
            _schema, table, column = diff[1:4]
            if column.foreign_keys and connection.dialect.name == "sqlite":
                _add_sqlite_reference(connection, table, column)
            else:
                operations.add_column(table, _detached(column))
            done.append(f"added column {table}.{column.name}")
            if "fill" in column.info:  # the rows already there get the field's default
                target = metadata.tables[table]
                connection.execute(
                    target.update()
                    .where(target.c[column.name].is_(None))
                    .values({column.name: column.info["fill"]})
                )
        elif kind == "add_index":
            index = diff[1]
            operations.create_index(
                index.name, index.table.name, [c.name for c in index.columns], unique=index.unique
            )
            done.append(f"created index {index.name}")
        elif kind == "add_constraint" and isinstance(diff[1], sa.UniqueConstraint):
            constraint = diff[1]
            columns = [c.name for c in constraint.columns]
            if connection.dialect.name == "sqlite":
                # SQLite cannot add a constraint to a table; a unique index of the same name
                # holds the same rule (and fails with the same message).
                table_name = constraint.table.name
                indexes = sa.inspect(connection).get_indexes(table_name)
                if any(index["name"] == constraint.name for index in indexes):
                    continue  # added so by an earlier start
                operations.create_index(constraint.name, table_name, columns, unique=True)
            else:
                operations.create_unique_constraint(constraint.name, constraint.table.name, columns)
            done.append(f"added unique constraint {constraint.name}")
        elif kind == "modify_type":
            _schema, table, column, _info, old, new = diff[1:7]
            if (_type_name(old), _type_name(new)) in _WIDENINGS:
                with operations.batch_alter_table(table) as batch:
                    batch.alter_column(column, type_=new, existing_type=old)
                done.append(f"widened {table}.{column} from {old} to {new}")
            else:
                refused.append(f"{table}.{column}: type {old} -> {new}")
        elif kind in (
            "remove_column",
            "remove_index",
            "remove_constraint",
            "remove_fk",
            "modify_nullable",
            "modify_default",
            "add_fk",
        ):
            _logger.debug("Schema difference left alone: %s", diff)
        else:
            _logger.info("Schema difference not applied: %s", diff)
    if refused:
        raise RegistryError(
            "The models need schema changes that could lose data, so nothing was changed: "
            + "; ".join(refused)
            + ". Migrate these columns by hand (or with an Alembic migration), then start again."
        )
    for step in done:
        _logger.info("Schema: %s", step)
    return done


def constant_default(field) -> Any:
    """The column value of ``field``'s default when it is a constant (not a function), else
    None: what a column added to a table with rows fills them with."""
    default = field.default
    if default is UNSET or default is None or default is False or callable(default):
        return None
    return field.convert_to_column(field.convert_to_cache(default))


def _add_sqlite_reference(connection: Connection, table: str, column: sa.Column) -> None:
    """Add a foreign-key column to a SQLite table. SQLite's ALTER TABLE takes a REFERENCES
    clause for a column added empty, but Alembic refuses any constraint there."""
    [fk] = column.foreign_keys
    target, target_column = fk.target_fullname.rsplit(".", 1)
    ondelete = f" ON DELETE {fk.ondelete}" if fk.ondelete else ""
    kind = column.type.compile(dialect=connection.dialect)
    connection.execute(
        sa.text(
            f'ALTER TABLE "{table}" ADD COLUMN "{column.name}" {kind} '
            f'REFERENCES "{target}" ("{target_column}"){ondelete}'
        )
    )


def _detached(column: sa.Column) -> sa.Column:
    """A copy of a metadata column, not bound to its table, for Alembic's add_column (its
    index, if any, is a difference of its own: ``add_index``)."""
    foreign_keys = [
        sa.ForeignKey(fk.target_fullname, ondelete=fk.ondelete) for fk in column.foreign_keys
    ]
    return sa.Column(column.name, column.type, *foreign_keys, nullable=True)


def _flatten(diffs: list) -> list[tuple]:
    """Alembic groups column modifications in lists; flatten them into tuples."""
    flat = []
    for diff in diffs:
        if isinstance(diff, list):
            flat.extend(diff)
        else:
            flat.append(diff)
    return flat


def _type_name(type_: sa.types.TypeEngine) -> str:
    name = type(type_).__name__.upper()
    return {"STRING": "VARCHAR", "DOUBLE": "DOUBLE PRECISION"}.get(name, name)
