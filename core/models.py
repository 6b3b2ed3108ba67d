"""Models and recordsets.

Addons declare models by subclassing ``Model``::

    class Partner(models.Model):
        _name = "x.partner"            # defines the model
        name = fields.Char(required=True)

    class PartnerExtension(models.Model):
        _inherit = "x.partner"         # extends it (in another addon)
        email = fields.Char()

        def write(self, vals):
            ...                        # runs before the previous addon's write
            return super().write(vals)

Declaring a class only records it for its addon; the registry builds the real model classes
(see ``model_classes``). An instance of such a class is a *recordset*: an ordered set of ids of
one model, bound to an ``Environment`` (user, context, transaction). Every method works on the
whole set; iterating gives one-record recordsets.

Reading a field loads that column for all records of the recordset's *prefetch set* (the
records the recordset came from: a search result, a browse) in one query, so looping over N
records costs one query, not N. Writes go to the database at once and update the cache: one
statement per call, whatever the number of records (``write_each`` gives each record its own
values in one UPDATE), stored computed fields marked ``precompute`` in that same statement.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import re
import reprlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from . import security
from .domain import AND, compile_domain
from .exceptions import AccessError, MissingError, UserError, ValidationError
from .fields import INTEGER_RANGE, UNSET, Command, Field, default_value

if TYPE_CHECKING:
    from .environment import Environment
    from .registry import Registry

# Model definitions recorded at import time, per addon, in import order.
DEFINITIONS: dict[str, list[type[BaseModel]]] = defaultdict(list)
# Ids per query when loading or writing a large recordset (keeps IN lists under driver limits).
CHUNK_SIZE = 10_000
CASE_CHUNK_SIZE = 1_000  # records per UPDATE that sets each its own values (two binds each)

_ORDER_TERM = re.compile(r"^\s*(\w+)(?:\s+(asc|desc))?(?:\s+nulls\s+(first|last))?\s*$", re.I)
_GRANULARITIES = ("hour", "day", "week", "month", "year")
_AGGREGATES = ("count", "count_distinct", "sum", "avg", "min", "max")
# Ids of records being created, while their precomputed fields are computed: negative, so
# that they can be no stored record's.
_PROVISIONAL_IDS = itertools.count(1)


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, dict | list) else value


def _chunks(ids: Sequence[int], size: int = CHUNK_SIZE) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class BaseModel:
    """The recordset API shared by every model."""

    __slots__ = ("_ids", "_prefetch_ids", "env")

    _name: ClassVar[str | None] = None
    _inherit: ClassVar[str | Sequence[str] | None] = None
    _description: ClassVar[str | None] = None
    _order: ClassVar[str] = "id"
    _rec_name: ClassVar[str | None] = None
    _table: ClassVar[str | None] = None
    _abstract: ClassVar[bool] = False
    _sql_constraints: ClassVar[Sequence[tuple[str, str, str]]] = ()

    # Set on built model classes only (see model_classes.build_models).
    pool: ClassVar[Registry]
    _fields: ClassVar[dict[str, Field]]
    _table_obj: ClassVar[sa.Table]
    _constraint_methods: ClassVar[tuple[tuple[str, frozenset[str]], ...]]
    _sql_constraint_messages: ClassVar[dict[str, str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "pool" in cls.__dict__ or not ("_name" in cls.__dict__ or "_inherit" in cls.__dict__):
            return
        inherit = cls.__dict__.get("_inherit")
        parents = [inherit] if isinstance(inherit, str) else list(inherit or ())
        cls._inherit = tuple(parents)
        if "_name" not in cls.__dict__:
            if len(parents) != 1:
                raise TypeError(
                    f"{cls.__qualname__}: set _name, or _inherit exactly one model to extend it."
                )
            cls._name = parents[0]
        module_parts = cls.__module__.split(".")
        if len(module_parts) < 2 or module_parts[0] != "addons":
            raise TypeError(
                f"Model class {cls.__qualname__} of '{cls._name}' must live in an addon "
                f"(module addons.<addon>...), not in {cls.__module__}."
            )
        DEFINITIONS[module_parts[1]].append(cls)

    # -- construction ---------------------------------------------------------------------
    def __init__(self, env: Environment, ids: tuple[int, ...], prefetch_ids: Iterable[int]):
        self.env = env
        self._ids = ids
        self._prefetch_ids = prefetch_ids

    @classmethod
    def _browse_empty(cls, env: Environment) -> BaseModel:
        return cls(env, (), ())

    def _browse(self, ids: tuple[int, ...], prefetch_ids: Iterable[int] | None = None):
        return type(self)(self.env, ids, ids if prefetch_ids is None else prefetch_ids)

    def browse(self, ids: int | Iterable[int] | None = None) -> BaseModel:
        """Records with the given ids (not checked for existence until read)."""
        if ids is None or ids is False:
            ids = ()
        elif isinstance(ids, int):
            ids = (ids,)
        elif isinstance(ids, Iterable):
            ids = tuple(ids)
        else:
            ids = (ids,)  # refused below
        low, high = INTEGER_RANGE
        for id_ in ids:
            if not isinstance(id_, int) or isinstance(id_, bool) or not low <= id_ <= high:
                raise ValidationError(
                    f"browse() takes record ids (integers from {low} to {high}), "
                    f"got {reprlib.repr(id_)}."
                )
        return self._browse(ids)

    def with_env(self, env: Environment) -> BaseModel:
        return type(self)(env, self._ids, self._prefetch_ids)

    def sudo(self, flag: bool = True) -> BaseModel:
        """The same records in superuser mode (no access rights or record rules)."""
        return self.with_env(self.env(su=flag))

    def with_user(self, user: int | BaseModel) -> BaseModel:
        """The same records as seen by another user (superuser mode dropped)."""
        return self.with_env(self.env(user=user, su=False))

    def with_context(self, *args: dict, **kwargs: Any) -> BaseModel:
        """The same records with the context updated (or replaced by a positional dict)."""
        context = dict(args[0] if args else self.env.context, **kwargs)
        return self.with_env(self.env(context=context))

    # -- set behaviour --------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    @property
    def id(self) -> int | bool:
        """The id of a single record; False for an empty recordset."""
        if not self._ids:
            return False
        self.ensure_one()
        return self._ids[0]

    def __iter__(self) -> Iterator[BaseModel]:
        cls, env, prefetch = type(self), self.env, self._prefetch_ids
        for id_ in self._ids:
            yield cls(env, (id_,), prefetch)

    def __len__(self) -> int:
        return len(self._ids)

    def __bool__(self) -> bool:
        return bool(self._ids)

    def __contains__(self, item: BaseModel) -> bool:
        self._check_same_model(item, "in")
        return len(item._ids) == 1 and item._ids[0] in self._ids

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        if isinstance(key, slice):
            return self._browse(self._ids[key], self._prefetch_ids)
        return self._browse((self._ids[key],), self._prefetch_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseModel):
            return NotImplemented
        return self._name == other._name and set(self._ids) == set(other._ids)

    def __hash__(self) -> int:
        return hash((self._name, frozenset(self._ids)))

    def _check_same_model(self, other: object, operator: str) -> None:
        if not isinstance(other, BaseModel) or other._name != self._name:
            raise TypeError(
                f"Cannot use '{operator}' between {self._name} and "
                f"{getattr(other, '_name', type(other).__name__)}."
            )

    def __or__(self, other: BaseModel) -> BaseModel:
        self._check_same_model(other, "|")
        return self._browse(tuple(dict.fromkeys(self._ids + other._ids)))

    def __and__(self, other: BaseModel) -> BaseModel:
        self._check_same_model(other, "&")
        keep = set(other._ids)
        return self._browse(tuple(id_ for id_ in self._ids if id_ in keep))

    def __sub__(self, other: BaseModel) -> BaseModel:
        self._check_same_model(other, "-")
        drop = set(other._ids)
        return self._browse(tuple(id_ for id_ in self._ids if id_ not in drop))

    def __repr__(self) -> str:
        return f"{self._name}{self._ids!r}"

    def ensure_one(self) -> BaseModel:
        if len(self._ids) != 1:
            raise ValueError(f"Expected a single {self._name} record, got {len(self._ids)}.")
        return self

    def exists(self) -> BaseModel:
        """The records of this set that still exist in the database."""
        if not self._ids:
            return self
        table, found = self._table_obj, set()
        for chunk in _chunks(self._ids):
            found.update(
                self.env.cr.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))).scalars()
            )
        return self._browse(tuple(id_ for id_ in self._ids if id_ in found), self._prefetch_ids)

    def mapped(self, func: str | Callable[[BaseModel], Any]) -> Any:
        """Values of a field path (``'thread_id.user_id.name'``) or of a function, per record.

        Relational results are merged into one recordset; other values come as a list.
        """
        if callable(func):
            values = [func(record) for record in self]
            if values and all(isinstance(v, BaseModel) for v in values):
                result = values[0]
                for value in values[1:]:
                    result |= value
                return result
            return values
        records: BaseModel = self
        for name in func.split("."):
            field = records._field(name)
            records._load(field)
            values = list(records.env.cache.get_values(field, records._ids))
            if not field.relational:
                return [field.convert_to_record(v, records) for v in values]
            ids: list[int] = []
            for value in values:
                ids.extend((value,) if isinstance(value, int) else value or ())
            comodel = records.env[field.comodel_name]
            records = comodel._browse(tuple(dict.fromkeys(ids)))
        return records

    def filtered(self, func: str | Callable[[BaseModel], Any]) -> BaseModel:
        """The records for which ``func`` (or the field path named by it) is truthy."""
        if isinstance(func, str):
            path = func
            func = lambda record: any(record.mapped(path))  # noqa: E731
        return self._browse(tuple(r._ids[0] for r in self if func(r)), self._prefetch_ids)

    def sorted(
        self, key: str | Callable[[BaseModel], Any] | None = None, reverse: bool = False
    ) -> BaseModel:
        """The records sorted by ``key`` (a function or a field name), else by ``_order``."""
        if key is None:
            ordered = self.sudo().search([("id", "in", list(self._ids))]) if self._ids else self
            ids = ordered._ids[::-1] if reverse else ordered._ids
            return self._browse(ids, self._prefetch_ids)
        if isinstance(key, str):
            name = key
            key = lambda record: record[name]  # noqa: E731
        records = sorted(self, key=key, reverse=reverse)
        return self._browse(tuple(r._ids[0] for r in records), self._prefetch_ids)

    # -- metadata helpers -----------------------------------------------------------------
    def _field(self, name: str) -> Field:
        field = self._fields.get(name)
        if field is None:
            raise ValidationError(f"Model '{self._name}' has no field '{name}'.")
        return field

    @classmethod
    def _rec_name_field(cls) -> str:
        if cls._rec_name:
            return cls._rec_name
        return "name" if "name" in cls._fields else "id"

    def _compute_display_name(self) -> None:
        rec_name = self._rec_name_field()
        for record in self:
            value = record[rec_name] if rec_name != "id" else False
            record.display_name = (
                str(value) if value else f"{self._description or self._name},{record.id}"
            )

    def _register_hook(self) -> None:
        """Called once per registry start, after the schema is in place, as the superuser:
        models create the records they need here (e.g. declared groups)."""

    def name_get(self) -> list[tuple[int, str]]:
        return [(record.id, record.display_name) for record in self]

    # -- access -----------------------------------------------------------------------------
    def check_access(self, operation: str) -> None:
        """Raise AccessError unless the user may do ``operation`` on these records (model
        access rights, then record rules)."""
        if self.env.su:
            return
        security.check_model_access(self.env, self._name, operation)
        if self._ids:
            self._check_record_rules(operation)

    def _check_record_rules(self, operation: str) -> None:
        domain = security.rule_domain(self.env, self._name, operation)
        if not domain:
            return
        table = self._table_obj
        allowed: set[int] = set()
        for chunk in _chunks(self._ids):
            query = sa.select(table.c.id).where(table.c.id.in_(chunk), compile_domain(self, domain))
            allowed.update(self.env.cr.execute(query).scalars())
        if len(allowed) < len(set(self._ids)):
            raise AccessError(
                f"You are not allowed to {security.VERBS[operation]} some '{self._name}' records "
                f"(record rules restrict your {operation} access)."
            )

    def _where(self, domain: Sequence, operation: str = "read") -> sa.ColumnElement[bool]:
        """The WHERE clause for ``domain`` combined with the user's record rules."""
        if not self.env.su:
            security.check_model_access(self.env, self._name, operation)
            rules = security.rule_domain(self.env, self._name, operation)
            if rules:
                domain = AND([rules, domain])
        return compile_domain(self, domain)

    # -- search ---------------------------------------------------------------------------
    def search(
        self,
        domain: Sequence = (),
        order: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> BaseModel:
        """Records matching ``domain`` that the user may read, in ``order`` (default
        ``_order``)."""
        query = sa.select(self._table_obj.c.id).where(self._where(domain))
        query = query.order_by(*self._order_by(order or self._order))
        if limit:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        return self._browse(tuple(self.env.cr.execute(query).scalars()))

    def search_fetch(
        self,
        domain: Sequence = (),
        field_names: Sequence[str] | None = None,
        order: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        lock: bool = False,
    ) -> BaseModel:
        """``search``, with the stored columns among ``field_names`` (default: all but
        binaries) read by the same query into the cache (Odoo's ``search_fetch``): reading
        them from the records found costs no other statement. With ``lock``, the rows found
        are locked by that statement as ``lock_for_update`` locks them."""
        if field_names is None:
            columns = self._fetched_columns()
        else:
            columns = [field for field in map(self._field, field_names) if field.column]
        table = self._table_obj
        query = sa.select(table.c.id, *(table.c[f.name] for f in columns))
        query = query.where(self._where(domain)).order_by(*self._order_by(order or self._order))
        if limit:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        if lock:
            self._check_lockable()
            query = query.with_for_update(of=table)
        rows = self.env.cr.execute(query).all()
        self._cache_rows(columns, rows)
        records = self._browse(tuple(row[0] for row in rows))
        if lock:
            records.check_access("write")
        return records

    def search_read(
        self,
        domain: Sequence = (),
        fields: Sequence[str] | None = None,
        order: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """``search`` then ``read``, in one query for the stored columns among ``fields``."""
        names = (
            list(fields)
            if fields is not None
            else [name for name, field in self._fields.items() if field.type != "binary"]
        )
        return self.search_fetch(domain, names, order, limit, offset).read(names)

    def search_count(self, domain: Sequence = ()) -> int:
        query = sa.select(sa.func.count()).select_from(self._table_obj).where(self._where(domain))
        return self.env.cr.execute(query).scalar_one()

    def _order_by(self, order: str) -> list:
        clauses = []
        for term in order.split(","):
            match = _ORDER_TERM.match(term)
            if not match:
                raise ValidationError(f"Invalid order {order!r} for model '{self._name}'.")
            name, direction, nulls = match.groups()
            if name != "id":
                field = self._fields.get(name)
                if field is None or not field.column:
                    raise ValidationError(
                        f"Cannot order '{self._name}' by '{name}': not a stored field."
                    )
            column = self._table_obj.c[name]
            clause = column.desc() if (direction or "").lower() == "desc" else column.asc()
            if nulls:
                clause = clause.nulls_first() if nulls.lower() == "first" else clause.nulls_last()
            clauses.append(clause)
        return clauses

    def read_group(
        self,
        domain: Sequence,
        groupby: Sequence[str],
        aggregates: Sequence[str] = ("__count",),
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        """Grouped aggregates, for statistics.

        ``groupby``: stored field names, dates optionally as ``'field:hour'`` (``day``,
        ``week``, ``month``, ``year``). ``aggregates``: ``'__count'`` or ``'field:func'`` with
        func in count, count_distinct, sum, avg, min, max. Returns one dict per group, keyed by
        the groupby and aggregate specs; groups ordered by the groupby values unless ``order``
        names one of those keys (``'__count desc'``).
        """
        table, dialect = self._table_obj, self.env.cr.dialect
        columns, keys = [], []
        for spec in groupby:
            name, _, granularity = spec.partition(":")
            column = self._stored_column(name, spec)
            if granularity:
                if granularity not in _GRANULARITIES or self._fields[name].type not in (
                    "date",
                    "datetime",
                ):
                    raise ValidationError(
                        f"Cannot group '{self._name}' by {spec!r}: use a date field with one of "
                        f"{', '.join(_GRANULARITIES)}."
                    )
                column = _truncate(column, granularity, dialect)
            columns.append(column.label(spec))
            keys.append(spec)
        measures = []
        # Aggregates come back as one Python type on both databases: counts int, averages
        # float (PostgreSQL gives a Decimal for integers), sums and min/max as their field.
        convert: dict[str, Callable[[Any], Any]] = {}
        for spec in aggregates:
            if spec == "__count":
                measures.append(sa.func.count().label(spec))
                continue
            name, _, func = spec.partition(":")
            if func not in _AGGREGATES:
                raise ValidationError(
                    f"Unknown aggregate {spec!r}; use field:func with func in "
                    f"{', '.join(_AGGREGATES)}."
                )
            column = self._stored_column(name, spec)
            measure = (
                sa.func.count(sa.distinct(column))
                if func == "count_distinct"
                else getattr(sa.func, func)(column)
            )
            measures.append(measure.label(spec))
            field = self._fields.get(name)
            if func == "avg":
                convert[spec] = float
            elif func in ("min", "max", "sum") and field is not None:
                convert[spec] = lambda value, field=field: field.convert_to_read(
                    field.convert_from_column(value), self
                )
        query = sa.select(*columns, *measures).select_from(table).where(self._where(domain))
        if columns:
            query = query.group_by(*columns)
        if order:
            direction = order.split()
            label = (
                sa.literal_column(f'"{direction[0]}"')
                if direction[0] in (*keys, *aggregates)
                else None
            )
            if label is None:
                raise ValidationError(f"read_group order {order!r} must name a group or aggregate.")
            query = query.order_by(label.desc() if direction[-1].lower() == "desc" else label)
        elif columns:
            query = query.order_by(*columns)
        groups = []
        for row in self.env.cr.execute(query).mappings():
            group = dict(row)
            for spec in keys:
                name, _, granularity = spec.partition(":")
                field = self._fields[name]
                if not granularity:
                    group[spec] = field.convert_to_read(
                        field.convert_from_column(group[spec]), self
                    )
                elif isinstance(group[spec], str):
                    group[spec] = dt.datetime.fromisoformat(group[spec]).replace(tzinfo=dt.UTC)
            for spec, to_python in convert.items():
                if group[spec] is not None:
                    group[spec] = to_python(group[spec])
            groups.append(group)
        return groups

    def _stored_column(self, name: str, spec: str) -> sa.Column:
        if name == "id":
            return self._table_obj.c.id
        field = self._fields.get(name)
        if field is None or not field.column:
            raise ValidationError(f"'{spec}': '{name}' is not a stored field of '{self._name}'.")
        return self._table_obj.c[name]

    # -- read -----------------------------------------------------------------------------
    def read(self, fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The records as dicts of plain values (ids for relations), ``id`` included."""
        names = (
            list(fields)
            if fields is not None
            else [name for name, field in self._fields.items() if field.type != "binary"]
        )
        selected = [self._field(name) for name in names]
        self._load(*selected)
        cache = self.env.cache
        result = [{"id": id_} for id_ in self._ids]
        for field in selected:
            convert = field.convert_to_read
            try:
                for row in result:
                    row[field.name] = convert(cache.get(field, row["id"]), self)
            except KeyError as missing:
                raise MissingError(
                    f"Record {self._name}({missing.args[0]}) does not exist or has been deleted."
                ) from None
        return result

    def _load(self, *fields: Field) -> None:
        """Make sure ``fields`` are in cache for every record of this set; the column fields
        among them come in one query, and only those columns."""
        cache = self.env.cache
        columns = []
        for field in fields:
            missing = cache.missing_ids(field, self._ids)
            if not missing:
                continue
            if field.column:
                columns.append(field)
            else:
                self._browse(tuple(missing), self._ids)._fetch(field, missing[0])
        if columns:
            missing = sorted({i for f in columns for i in cache.missing_ids(f, self._ids)})
            for chunk in _chunks(missing):
                self._browse(tuple(chunk))._fetch_columns(chunk[0], columns)

    def _read_value(self, field: Field) -> Any:
        """The cached value of ``field`` for this single record, loading it when needed."""
        id_ = self._ids[0]
        cache = self.env.cache
        try:
            return cache.get(field, id_)
        except KeyError:
            pass
        self._fetch(field, id_)
        try:
            return cache.get(field, id_)
        except KeyError:
            raise MissingError(
                f"Record {self._name}({id_}) does not exist or has been deleted."
            ) from None

    def _prefetch_batch(self, field: Field, id_: int) -> list[int]:
        """``id_`` plus up to CHUNK_SIZE other ids of the prefetch set lacking ``field``."""
        cache = self.env.cache
        batch = {id_: None}
        for other in self._prefetch_ids:
            if len(batch) >= CHUNK_SIZE:
                break
            if other not in batch and not cache.contains(field, other):
                batch[other] = None
        for other in self._ids:
            if len(batch) >= CHUNK_SIZE:
                break
            if other not in batch and not cache.contains(field, other):
                batch[other] = None
        return list(batch)

    def _fetch(self, field: Field, id_: int) -> None:
        """Load ``field`` (and, for columns, all columns) for a batch around record ``id_``."""
        ids = self._prefetch_batch(field, id_)
        records = self._browse(tuple(ids), self._prefetch_ids)
        if field.computed and not field.store:
            records._compute_field(field)
        elif field.type in ("one2many", "many2many"):
            records._fetch_x2many(field)
        else:
            records._fetch_columns(id_)

    def _fetch_columns(self, required_id: int, columns: Sequence[Field] | None = None) -> None:
        """Load ``columns`` (default: all but binaries) of these records into the cache."""
        table = self._table_obj
        if columns is None:
            columns = self._fetched_columns()
        if self.env.su:  # no record rules: the same statement every time
            query = self._statement(
                ("fetch", *(f.name for f in columns)),
                lambda: sa.select(table.c.id, *(table.c[f.name] for f in columns)).where(
                    table.c.id.in_(sa.bindparam("ids", expanding=True))
                ),
            )
            rows = self.env.cr.execute(query, {"ids": list(self._ids)}).all()
        else:
            query = sa.select(table.c.id, *(table.c[f.name] for f in columns))
            where = sa.and_(table.c.id.in_(self._ids), self._where([], "read"))
            rows = self.env.cr.execute(query.where(where)).all()
        self._cache_rows(columns, rows)
        denied = not self.env.su and required_id not in {row[0] for row in rows}
        if denied and self._browse((required_id,)).exists():
            raise AccessError(
                f"You are not allowed to read this '{self._name}' record "
                f"(record rules restrict your read access)."
            )

    def _cache_rows(self, columns: Sequence[Field], rows: Sequence[Any]) -> None:
        """Cache ``rows`` read from the database: each row an id, then ``columns``' values."""
        cache = self.env.cache
        for index, field in enumerate(columns, start=1):
            convert = field.convert_from_column
            cache.update(field, {row[0]: convert(row[index]) for row in rows})

    def _fetch_x2many(self, field: Field) -> None:
        cache, cr = self.env.cache, self.env.cr
        comodel = self.env[field.comodel_name]
        values: dict[int, list[int]] = {id_: [] for id_ in self._ids}
        if field.type == "one2many":
            inverse = comodel._table_obj.c[field.inverse_name]
            query = (
                sa.select(comodel._table_obj.c.id, inverse)
                .where(inverse.in_(self._ids), comodel._where([]))
                .order_by(*comodel._order_by(comodel._order))
            )
        else:
            rel = self.pool.relation_tables[field.relation]
            co_table = comodel._table_obj
            query = (
                sa.select(rel.c[field.column2], rel.c[field.column1])
                .join(co_table, co_table.c.id == rel.c[field.column2])
                .where(rel.c[field.column1].in_(self._ids), comodel._where([]))
                .order_by(*comodel._order_by(comodel._order))
            )
        for co_id, owner in cr.execute(query):
            values[owner].append(co_id)
        cache.update(field, {id_: tuple(ids) for id_, ids in values.items()})

    def _compute_field(self, field: Field) -> None:
        """Run the compute method of ``field`` on these records; results go to the cache.
        Fields sharing the method are assigned by the same call, as in Odoo."""
        records = self.exists() if not field.store else self
        siblings = (
            [field]
            if field.related
            else [f for f in self._fields.values() if f.compute and f.compute == field.compute]
        )
        with contextlib.ExitStack() as stack:
            assigned = next(iter([stack.enter_context(self.env.computing(f)) for f in siblings]))
            if field.related:
                for record in records:
                    value: Any = record
                    for name in field.related.split("."):
                        value = value[name] if value else False
                    record[field.name] = value  # type: ignore[index]
            else:
                method = field.compute
                (getattr(records, method) if isinstance(method, str) else lambda: method(records))()
        missing = set(records._ids) - assigned
        if missing:
            raise ValueError(
                f"Compute method of {field} did not assign a value to records "
                f"{sorted(missing)[:10]}."
            )

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    # -- create ---------------------------------------------------------------------------
    def default_get(self, field_names: Iterable[str]) -> dict[str, Any]:
        """Defaults for the named fields (context keys ``default_<field>`` win)."""
        static, dynamic = self._defaults_for([self._field(name) for name in field_names])
        return {**static, **{field.name: default_value(field, self) for field in dynamic}}

    def _defaults_for(self, fields: Sequence[Field]) -> tuple[dict[str, Any], list[Field]]:
        """Defaults of ``fields``: values fixed for this call (context ``default_<name>``
        keys and plain values), and the fields whose default is computed per record."""
        static: dict[str, Any] = {}
        dynamic: list[Field] = []
        for field in fields:
            key = f"default_{field.name}"
            if key in self.env.context:
                static[field.name] = self.env.context[key]
            elif callable(field.default):
                dynamic.append(field)
            elif field.default is not UNSET:
                static[field.name] = field.default
        return static, dynamic

    def create(self, vals_list: dict[str, Any] | Sequence[dict[str, Any]]) -> BaseModel:
        """Create records from a dict or a list of dicts (one INSERT for the list); returns
        the new recordset."""
        if isinstance(vals_list, dict):
            vals_list = [vals_list]
        if not vals_list:
            return self.browse()
        if not self.env.su:
            security.check_model_access(self.env, self._name, "create")
        with self.env.cr.call_savepoint():
            records = self._create(vals_list)
            if not self.env.su:
                records._check_record_rules("create")
        return records

    def _create(self, vals_list: Sequence[dict[str, Any]]) -> BaseModel:
        for vals in vals_list:
            if not isinstance(vals, dict):
                raise ValidationError(
                    f"create() on '{self._name}' takes dicts of field values, "
                    f"got {type(vals).__name__}."
                )
        given = set().union(*(vals.keys() for vals in vals_list))
        self._check_field_names(dict.fromkeys(given))
        now, uid = dt.datetime.now(dt.UTC), self.env.uid
        # Audit values are the same for every row: convert them once.
        audit = {
            self._fields[name]: value
            for name, value in (
                ("create_date", now),
                ("write_date", now),
                ("create_uid", uid),
                ("write_uid", uid),
            )
        }
        audit_columns = {field.name: field.convert_to_column(v) for field, v in audit.items()}
        column_fields = [f for f in self._fields.values() if f.column and f not in audit]
        static, dynamic = self._defaults_for([f for f in column_fields if not f.computed])
        rows: list[dict[str, Any]] = []
        cache_rows: list[list[Any]] = []
        x2many: list[dict[Field, Any]] = []
        for vals in vals_list:
            full = {
                **static,
                **{f.name: default_value(f, self) for f in dynamic if f.name not in vals},
                **vals,
            }
            row: dict[str, Any] = dict(audit_columns)
            cache_row: list[Any] = []
            for field in column_fields:
                value = field.convert_to_cache(full.get(field.name), self)
                if value is None and field.required and not field.computed:
                    raise ValidationError(
                        f"Missing required value for field '{field.name}' ({field.string}) "
                        f"of '{self._name}'."
                    )
                cache_row.append(value)
                row[field.name] = field.convert_to_column(value)
            rows.append(row)
            cache_rows.append(cache_row)
            x2many.append(
                {
                    self._fields[name]: value
                    for name, value in vals.items()
                    if self._fields[name].type in ("one2many", "many2many")
                }
            )
        stored_computed = [
            f for f in self._fields.values() if f.computed and f.store and f.name not in given
        ]
        precomputed = [f for f in stored_computed if f.precompute]
        if precomputed:
            self._precompute_rows(precomputed, column_fields, audit, rows, cache_rows)
        # Columns empty in every row are left to the database's NULL: less to send.
        empty = [f.name for f in column_fields if all(row[f.name] is None for row in rows)]
        for row in rows:
            for name in empty:
                del row[name]
        ids = self._insert_rows(rows)
        cache = self.env.cache
        for index, field in enumerate(column_fields):
            cache.update(field, {id_: row[index] for id_, row in zip(ids, cache_rows, strict=True)})
        for field, value in audit.items():
            cache.update(field, dict.fromkeys(ids, value))
        records = self._browse(ids)
        for record, relations in zip(records, x2many, strict=True):
            for field, commands in relations.items():
                record._write_x2many(field, commands)
        records.sudo()._recompute([f for f in stored_computed if not f.precompute])
        self.pool.triggers.after_change(records, set(self._fields), created=True)
        records._validate_constraints(set(self._fields))
        return records

    def _precompute_rows(
        self,
        fields: list[Field],
        column_fields: list[Field],
        audit: dict[Field, Any],
        rows: list[dict[str, Any]],
        cache_rows: list[list[Any]],
    ) -> None:
        """Compute the precomputed ``fields`` of rows about to be inserted, into ``rows`` and
        ``cache_rows``: on provisional records (negative ids) whose values are cached."""
        cache = self.env.cache
        ids = tuple(-next(_PROVISIONAL_IDS) for _ in rows)
        for index, field in enumerate(column_fields):
            cache.update(field, {id_: row[index] for id_, row in zip(ids, cache_rows, strict=True)})
        for field, value in audit.items():
            cache.update(field, dict.fromkeys(ids, value))
        try:
            self.sudo()._browse(ids)._compute_fields(fields)
            positions = {field: column_fields.index(field) for field in fields}
            for id_, row, cache_row in zip(ids, rows, cache_rows, strict=True):
                for field, position in positions.items():
                    cache_row[position] = value = cache.get(field, id_)
                    row[field.name] = field.convert_to_column(value)
        finally:
            cache.invalidate(None, ids)

    def _precomputed(
        self,
        columns: dict[Field, Any],
        names: set[str],
        condition: Any = None,
        each: dict[int, dict[Field, Any]] | None = None,
    ) -> tuple[list[Field], dict[int, dict[Field, Any]]]:
        """For a write of ``columns`` (cache values; and of each record's own values in
        ``each``) on these records (those that match ``condition``, when given): the
        precomputed fields that depend on ``names``, and each record's values of them. The
        values they read and this transaction has not are read first, their rows locked; a
        record that does not match ``condition`` then is left out. The new values are put in
        the cache."""
        triggers, cache = self.pool.triggers, self.env.cache
        candidates = {
            dependent
            for name in names
            for dependent, prefix in triggers.dependents.get((self._name, name), ())
            if not prefix and dependent.precompute and dependent.name not in names
        }
        fields, reads = [], set()
        written = set(columns).union(*(values for values in (each or {}).values()))
        for field in candidates:
            owns = {self._fields[path.split(".")[0]] for path in field.depends} - written
            # Not a relation written after the UPDATE, nor another field computed here.
            if not any(own.name in names or own in candidates for own in owns):
                fields.append(field)
                reads.update(own for own in owns if own.column)
        if not fields:
            return [], {}
        records = self
        missing = [field for field in reads if cache.missing_ids(field, self._ids)]
        if missing:
            records = self._browse(self._fetch_locked(condition))
        for field, value in columns.items():
            cache.update(field, dict.fromkeys(records._ids, value))
        for id_ in records._ids if each is not None else ():
            for field, value in each[id_].items():
                cache.set(field, id_, value)
        records.sudo()._compute_fields(fields)
        return fields, {id_: {f: cache.get(f, id_) for f in fields} for id_ in records._ids}

    def _fetch_locked(self, condition: Any = None) -> tuple[int, ...]:
        """Read these records (those matching ``condition``) into the cache, their rows
        locked until the transaction ends, so that what is computed from them stays right;
        returns the ids of the records read."""
        table = self._table_obj
        columns = self._fetched_columns()
        found: set[int] = set()
        for chunk in _chunks(self._ids):
            query = sa.select(table.c.id, *(table.c[f.name] for f in columns))
            query = query.where(table.c.id.in_(chunk))
            if condition is not None:
                query = query.where(condition)
            rows = self.env.cr.execute(query.with_for_update()).all()
            self._cache_rows(columns, rows)
            found.update(row[0] for row in rows)
        return tuple(id_ for id_ in self._ids if id_ in found)

    def _insert_rows(self, rows: list[dict[str, Any]]) -> tuple[int, ...]:
        """INSERT the rows (on PostgreSQL in one statement, each column's values an array;
        on SQLite in batches); returns their new ids in the order of ``rows``."""
        table = self._table_obj
        if self.env.cr.dialect == "sqlite":
            # SQLAlchemy cannot batch an *ordered* RETURNING on SQLite and would insert row by
            # row. SQLite gives the rows of a write-locked transaction increasing rowids, in
            # the order they are inserted, so sorting the ids restores the rows' order.
            statement = self._statement(
                ("insert", "sqlite"), lambda: sa.insert(table).returning(table.c.id)
            )
            return tuple(sorted(self._execute_write(statement, rows).scalars()))
        names = tuple(rows[0])
        statement = self._statement(("insert", *names), lambda: self._unnest_insert(names))
        columns = {name: [row[name] for row in rows] for name in names}
        # The rows are inserted in the order of the arrays, and take the sequence's ids in
        # that order: sorted, the ids follow the rows (as on SQLite).
        return tuple(sorted(self._execute_write(statement, columns).scalars()))

    @classmethod
    def _unnest_insert(cls, names: tuple[str, ...]) -> Any:
        """PostgreSQL's INSERT of many rows, each column's values bound as one array: the
        statement is the same whatever the number of rows, so psycopg parses it once and the
        server prepares it (rows bound one by one would make a statement of its own for each
        number of rows, parsed anew by psycopg every time past 50 parameters)."""
        table = cls._table_obj
        arrays = [sa.bindparam(name, type_=_array_of(table.c[name])) for name in names]
        new = sa.func.unnest(*arrays).table_valued(*names, with_ordinality="position")
        new = new.render_derived()  # AS new(a, b, ...): the columns named
        values = sa.select(*(new.c[name] for name in names)).order_by(new.c.position)
        return sa.insert(table).from_select(names, values).returning(table.c.id)

    @classmethod
    def _fetched_columns(cls) -> tuple[Field, ...]:
        """The stored fields a fetch of records reads: every column but binaries."""
        columns = cls.__dict__.get("_fetched")
        if columns is None:
            columns = tuple(f for f in cls._fields.values() if f.column and f.type != "binary")
            cls._fetched = columns  # (of this built class: of one registry)
        return columns

    @classmethod
    def _statement(cls, key: tuple, build: Callable[[], Any]) -> Any:
        """The statement ``key`` of this model, built once: the ORM's frequent statements
        whose only varying parts are bound parameters are not built again at each call
        (SQLAlchemy's building and cache-key computing cost more than its execution)."""
        statements = cls.__dict__.get("_statements")
        if statements is None:
            statements = {}
            cls._statements = statements  # (of this built class: of one registry)
        statement = statements.get(key)
        if statement is None:
            statement = statements[key] = build()
        return statement

    def _check_field_names(self, vals: dict[str, Any]) -> None:
        for name in vals:
            field = self._fields.get(name)
            if field is None:
                raise ValidationError(
                    f"Model '{self._name}' has no field '{name}'. Known fields: "
                    f"{', '.join(sorted(self._fields))}."
                )
            if field.computed and not field.store:
                raise ValidationError(
                    f"Field '{name}' of '{self._name}' is computed and cannot be written."
                )

    def _execute_write(self, statement: Any, parameters: Any = None) -> Any:
        """Execute an INSERT/UPDATE/DELETE, turning constraint violations into clear errors."""
        try:
            return self.env.cr.execute(statement, parameters)
        except IntegrityError as exc:
            raise self._integrity_error(exc) from None

    def _integrity_error(self, exc: IntegrityError) -> UserError:
        detail = str(exc.orig)
        for signature, message in self.pool.sql_constraint_messages.items():
            # PostgreSQL names the constraint; SQLite names the columns ("table.col, ...").
            if any(part in detail for part in signature):
                return ValidationError(message)
        lowered = detail.lower()
        if "unique" in lowered:
            return ValidationError(
                f"A '{self._name}' record with the same unique values already exists: {detail}"
            )
        if "foreign key" in lowered:
            return UserError(
                f"The operation on '{self._name}' would leave a reference to a missing record, "
                f"or delete a record that others still reference: {detail}"
            )
        return ValidationError(f"The database refused the change to '{self._name}': {detail}")

    # -- write ----------------------------------------------------------------------------
    def write(self, vals: dict[str, Any]) -> bool:
        """Update every record of the set with ``vals``."""
        if not isinstance(vals, dict):
            raise ValidationError(f"write() on '{self._name}' takes a dict of field values.")
        self._check_field_names(vals)
        if not self._ids:
            return True
        self.check_access("write")
        with self.env.cr.call_savepoint():
            self._write(vals)
        return True

    def write_each(self, vals_list: Sequence[dict[str, Any]]) -> bool:
        """Write each record of the set its own values (``vals_list``, in the set's order;
        stored column fields, the same ones for every record): one UPDATE, where ``write``
        would take one per record. The model's ``write()`` overrides do not run."""
        if len(vals_list) != len(self._ids) or len(set(self._ids)) != len(self._ids):
            raise ValidationError(
                f"write_each() on '{self._name}' takes one dict of values per record of a set "
                f"without duplicates ({len(self._ids)} records, {len(vals_list)} dicts)."
            )
        if not self._ids:
            return True
        names = set(vals_list[0])
        for vals in vals_list:
            self._check_field_names(vals)
            if set(vals) != names:
                raise ValidationError(
                    f"write_each() on '{self._name}' writes the same fields on every record: "
                    f"{sorted(names)} and {sorted(vals)} differ."
                )
            for name in vals:
                if not self._fields[name].column:
                    raise ValidationError(
                        f"write_each() writes stored column fields; '{name}' of "
                        f"'{self._name}' is not one."
                    )
        self.check_access("write")
        with self.env.cr.call_savepoint():
            each = {
                id_: {
                    self._fields[n]: self._column_value(self._fields[n], v) for n, v in vals.items()
                }
                for id_, vals in zip(self._ids, vals_list, strict=True)
            }
            before = self.pool.triggers.before_change(self, names)
            columns = {
                self._fields["write_date"]: dt.datetime.now(dt.UTC),
                self._fields["write_uid"]: self.env.uid,
            }
            precomputed, computed = self._precomputed(columns, names, each=each)
            if precomputed:  # (a record that is gone was not computed)
                each = {id_: {**each[id_], **values} for id_, values in computed.items()}
            self._update(columns, each)
            self.pool.triggers.after_change(self, names, before=before, precomputed=precomputed)
            self._validate_constraints(names)
        return True

    def _write(self, vals: dict[str, Any]) -> None:
        columns: dict[Field, Any] = {}
        relations: dict[Field, Any] = {}
        for name, value in vals.items():
            field = self._fields[name]
            if field.type in ("one2many", "many2many"):
                relations[field] = value
            else:
                columns[field] = self._column_value(field, value)
        names = set(vals)
        before = self.pool.triggers.before_change(self, names)
        precomputed: list[Field] = []
        if columns:
            columns[self._fields["write_date"]] = dt.datetime.now(dt.UTC)
            columns[self._fields["write_uid"]] = self.env.uid
            precomputed, each = self._precomputed(columns, names)
            self._update(columns, each if precomputed else None)
        for field, commands in relations.items():
            for record in self:
                record._write_x2many(field, commands)
        self.pool.triggers.after_change(self, names, before=before, precomputed=precomputed)
        self._validate_constraints(names)

    def _column_value(self, field: Field, value: Any) -> Any:
        """``value`` for ``field`` as the cache keeps it; a required field cannot be
        emptied."""
        cache_value = field.convert_to_cache(value, self)
        if cache_value is None and field.required:
            raise ValidationError(
                f"Field '{field.name}' ({field.string}) of '{self._name}' is required and "
                "cannot be emptied."
            )
        return cache_value

    def _update(
        self,
        columns: dict[Field, Any],
        each: dict[int, dict[Field, Any]] | None = None,
        condition: Any = None,
    ) -> set[int]:
        """UPDATE these records (those in ``each``, when given; those that match
        ``condition``, when given) with ``columns`` (cache values), and each record with its
        own values in ``each``: a field whose values differ is set from an array of them on
        PostgreSQL (one statement), by a CASE on the id on SQLite (one per chunk of records).
        Caches what it wrote; returns the ids written."""
        cache = self.env.cache
        ids, common = self._ids, dict(columns)
        varying: dict[Field, dict[int, Any]] = {}
        if each is not None:
            ids = tuple(id_ for id_ in ids if id_ in each)
            for field in {field for values in each.values() for field in values}:
                values = {id_: each[id_][field] for id_ in ids}
                if len({_hashable(value) for value in values.values()}) == 1:
                    common[field] = values[ids[0]]
                else:
                    varying[field] = values
        if not varying and condition is None:
            return self._update_common(common, ids)
        if not ids:
            return set()
        if varying and self.env.cr.dialect == "postgresql":
            written = self._update_each(common, varying, ids, condition)
        else:
            written = self._update_by_case(common, varying, ids, condition)
        for field, value in common.items():
            cache.update(field, dict.fromkeys(written, value))
        for field, by_id in varying.items():
            cache.update(field, {id_: by_id[id_] for id_ in written})
        return written

    def _update_by_case(
        self,
        common: dict[Field, Any],
        varying: dict[Field, dict[int, Any]],
        ids: Sequence[int],
        condition: Any,
    ) -> set[int]:
        """``_update``'s statements on SQLite, and wherever no field's values differ: one per
        chunk of records, a field whose values differ set by a CASE on the id."""
        table = self._table_obj
        params = {f.name: f.convert_to_column(v) for f, v in common.items()}
        written: set[int] = set()
        for chunk in _chunks(ids, CASE_CHUNK_SIZE if varying else CHUNK_SIZE):
            values = dict(params)
            for field, by_id in varying.items():
                column_type = table.c[field.name].type
                cases = {
                    id_: sa.bindparam(None, field.convert_to_column(by_id[id_]), column_type)
                    for id_ in chunk
                }
                values[field.name] = sa.case(cases, value=table.c.id)
            statement = sa.update(table).where(table.c.id.in_(chunk)).values(values)
            if condition is None:
                self._execute_write(statement)
                written.update(chunk)
            else:
                statement = statement.where(condition).returning(table.c.id)
                written.update(self._execute_write(statement).scalars())
        return written

    def _update_each(
        self,
        common: dict[Field, Any],
        varying: dict[Field, dict[int, Any]],
        ids: Sequence[int],
        condition: Any,
    ) -> set[int]:
        """``_update`` on PostgreSQL: one UPDATE ... FROM the arrays of the ids and of each
        varying field's values, the same statement whatever the number of records (parsed
        once by psycopg, prepared by the server: see ``_unnest_insert``)."""
        table = self._table_obj
        each = tuple(sorted(field.name for field in varying))
        same = tuple(sorted(field.name for field in common))

        def build() -> Any:
            arrays = [sa.bindparam("ids", type_=_array_of(table.c.id))] + [
                sa.bindparam(f"each_{name}", type_=_array_of(table.c[name])) for name in each
            ]
            new = sa.func.unnest(*arrays).table_valued("id", *each).render_derived()
            values = {name: new.c[name] for name in each} | {
                name: sa.bindparam(f"new_{name}", type_=table.c[name].type) for name in same
            }
            return sa.update(table).where(table.c.id == new.c.id).values(values)

        statement = self._statement(("update each", each, same), build)
        params: dict[str, Any] = {"ids": list(ids)}
        for field, by_id in varying.items():
            params[f"each_{field.name}"] = [field.convert_to_column(by_id[i]) for i in ids]
        for field, value in common.items():
            params[f"new_{field.name}"] = field.convert_to_column(value)
        if condition is None:
            self._execute_write(statement, params)
            return set(ids)
        statement = statement.where(condition).returning(table.c.id)
        return set(self._execute_write(statement, params).scalars())

    def _update_common(self, columns: dict[Field, Any], ids: Sequence[int]) -> set[int]:
        """``_update`` of the same values (``columns``, cache values) on every record of
        ``ids``, by a statement built once per set of fields."""
        table, names = self._table_obj, tuple(sorted(field.name for field in columns))
        statement = self._statement(
            ("update", *names),
            lambda: (
                sa.update(table)
                .where(table.c.id.in_(sa.bindparam("ids", expanding=True)))
                .values(
                    {name: sa.bindparam(f"new_{name}", type_=table.c[name].type) for name in names}
                )
            ),
        )
        values = {f"new_{f.name}": f.convert_to_column(v) for f, v in columns.items()}
        for chunk in _chunks(ids):
            self._execute_write(statement, {"ids": list(chunk), **values})
        cache = self.env.cache
        for field, value in columns.items():
            cache.update(field, dict.fromkeys(ids, value))
        return set(ids)

    def write_where(self, domain: Sequence, vals: dict[str, Any]) -> BaseModel:
        """Write ``vals`` on the records of this set that still match ``domain``, and return
        those records (the others are left as they are).

        A compare-and-set: the condition and the change are one UPDATE statement, so of two
        transactions racing to change the same record only one can win while the condition
        is on the record's own columns (on PostgreSQL the second waits for the first to end,
        then checks the condition again). ``write_date``, the cache and stored computed
        fields follow as with ``write()``, but the model's ``write()`` overrides do not run:
        this is the primitive for protocols (leases, claims) that one module of an addon owns
        and wraps in methods of its own. Stored column fields only.
        """
        if not isinstance(vals, dict):
            raise ValidationError(f"write_where() on '{self._name}' takes a dict of field values.")
        self._check_field_names(vals)
        if not self._ids:
            return self
        self.check_access("write")
        columns: dict[Field, Any] = {}
        for name, value in vals.items():
            field = self._fields[name]
            if not field.column:
                raise ValidationError(
                    f"write_where() writes stored column fields; '{name}' of '{self._name}' "
                    "is not one."
                )
            columns[field] = self._column_value(field, value)
        names = set(vals)
        before = self.pool.triggers.before_change(self, names)
        columns[self._fields["write_date"]] = dt.datetime.now(dt.UTC)
        columns[self._fields["write_uid"]] = self.env.uid
        condition = compile_domain(self, domain)
        precomputed, each = self._precomputed(columns, names, condition)
        changed = self._update(columns, each if precomputed else None, condition)
        self._browse(tuple(i for i in self._ids if i not in changed)).invalidate_recordset()
        records = self._browse(tuple(i for i in self._ids if i in changed))
        if records:
            self.pool.triggers.after_change(records, names, before=before, precomputed=precomputed)
            records._validate_constraints(names)
        return records

    def lock_for_update(
        self, skip_locked: bool = False, domain: Sequence = (), read: bool = False
    ) -> BaseModel:
        """Lock the rows of these records until the transaction ends; returns the records
        that exist (with ``skip_locked``: only those no other transaction holds, instead of
        waiting for them; with ``domain``: only those matching it, in the same statement;
        with ``read``: only those the user may read, their stored fields read by the same
        statement).

        PostgreSQL: ``SELECT ... FOR UPDATE [SKIP LOCKED]``; another transaction locking or
        conditionally writing these rows waits until this one ends. SQLite has no row locks:
        each transaction holds the database's write lock from its first statement (``BEGIN
        IMMEDIATE``), which serialises transactions at least as strongly. The records' cached
        values are dropped, so what is read next is the latest committed state.
        """
        if not self._ids:
            return self
        self._check_lockable()
        self.check_access("write")
        table, found = self._table_obj, set()
        condition = compile_domain(self, domain)
        columns = self._fetched_columns()
        if read and not self.env.su:
            condition = sa.and_(condition, self._where([], "read"))
        self.invalidate_recordset()
        for chunk in _chunks(self._ids):
            query = (
                sa.select(table.c.id, *(table.c[f.name] for f in columns if read))
                .where(table.c.id.in_(chunk), condition)
                .with_for_update(skip_locked=skip_locked)
            )
            rows = self.env.cr.execute(query).all()
            found.update(row[0] for row in rows)
            if read:
                self._cache_rows(columns, rows)
        return self._browse(tuple(i for i in self._ids if i in found), self._prefetch_ids)

    def _check_lockable(self) -> None:
        if self.env.cr.readonly:
            raise RuntimeError(
                f"Cannot lock '{self._name}' records through a read-only cursor: its "
                "transactions take no write lock on SQLite."
            )

    def invalidate_recordset(self, fnames: Iterable[str] | None = None) -> None:
        """Forget the cached values of these records (of the named fields, else all), so
        the next read loads them from the database."""
        fields = self._fields.values() if fnames is None else [self._field(n) for n in fnames]
        self.env.cache.invalidate(fields, self._ids)

    def _write_x2many(self, field: Field, commands: Any) -> None:
        """Apply Odoo x2many commands (or a list of ids / a recordset, meaning "set")."""
        self.ensure_one()
        comodel = self.env[field.comodel_name]
        if hasattr(commands, "_ids"):
            commands = [Command.set(commands._ids)]
        elif not isinstance(commands, list | tuple):
            raise ValidationError(
                f"Field '{field.name}' of '{self._name}' takes a list of commands or ids."
            )
        elif commands and all(isinstance(c, int) for c in commands):
            commands = [Command.set(commands)]
        for command in commands:
            if not isinstance(command, list | tuple) or not command:
                raise ValidationError(
                    f"Invalid command {command!r} for field '{field.name}' of '{self._name}'."
                )
            code = command[0]
            if code == Command.CREATE:
                created = comodel.create(
                    {**command[2], field.inverse_name: self.id}
                    if field.type == "one2many"
                    else command[2]
                )
                if field.type == "many2many":
                    self._link_m2m(field, created._ids)
            elif code == Command.UPDATE:
                comodel.browse(command[1]).write(command[2])
            elif code == Command.DELETE:
                comodel.browse(command[1]).unlink()
            elif code == Command.LINK:
                self._link(field, comodel, [command[1]])
            elif code == Command.UNLINK:
                self._unlink_from(field, comodel, [command[1]])
            elif code == Command.CLEAR:
                self._unlink_from(field, comodel, list(self[field.name]._ids))
            elif code == Command.SET:
                current = set(self[field.name]._ids)
                wanted = list(command[2])
                self._unlink_from(field, comodel, [i for i in current if i not in wanted])
                self._link(field, comodel, [i for i in wanted if i not in current])
            else:
                raise ValidationError(
                    f"Unknown command {command!r} for field '{field.name}' of '{self._name}'."
                )
        self.env.cache.invalidate([field], self._ids)

    def _link(self, field: Field, comodel: BaseModel, ids: list[int]) -> None:
        if not ids:
            return
        if field.type == "one2many":
            comodel.browse(ids).write({field.inverse_name: self.id})
        else:
            self._link_m2m(field, ids)

    def _unlink_from(self, field: Field, comodel: BaseModel, ids: list[int]) -> None:
        if not ids:
            return
        if field.type == "one2many":
            inverse = comodel._fields[field.inverse_name]
            children = comodel.browse(ids)
            if inverse.required or inverse.ondelete == "cascade":
                children.unlink()
            else:
                children.write({field.inverse_name: False})
            return
        rel = self.pool.relation_tables[field.relation]
        self._execute_write(
            sa.delete(rel).where(rel.c[field.column1] == self.id, rel.c[field.column2].in_(ids))
        )
        self.pool.triggers.relation_changed(self, field)

    def _link_m2m(self, field: Field, ids: Sequence[int]) -> None:
        rel = self.pool.relation_tables[field.relation]
        existing = set(
            self.env.cr.execute(
                sa.select(rel.c[field.column2]).where(rel.c[field.column1] == self.id)
            ).scalars()
        )
        rows = [{field.column1: self.id, field.column2: i} for i in ids if i not in existing]
        if rows:
            self._execute_write(sa.insert(rel), rows)
        self.pool.triggers.relation_changed(self, field)

    # -- unlink ---------------------------------------------------------------------------
    def unlink(self) -> bool:
        """Delete the records (related records follow their fields' ``ondelete``)."""
        if not self._ids:
            return True
        self.check_access("unlink")
        with self.env.cr.call_savepoint():
            before = self.pool.triggers.before_change(self, set(self._fields), deleting=True)
            table = self._table_obj
            for chunk in _chunks(self._ids):
                self._execute_write(sa.delete(table).where(table.c.id.in_(chunk)))
            self.env.cache.clear()
            self.pool.triggers.after_change(self._browse(()), set(self._fields), before=before)
        return True

    # -- computed fields and constraints --------------------------------------------------
    def _recompute(self, fields: Iterable[Field]) -> None:
        """Recompute stored computed fields on these records and write the results: each
        compute method runs once, and one UPDATE writes them all (a job's durations and name
        in one statement, whatever the number of jobs)."""
        fields = list(dict.fromkeys(fields))
        records = self  # just created or written, or found by the triggers: they exist
        if not records or not fields:
            return
        records._compute_fields(fields)
        cache = self.env.cache
        records._update({}, {id_: {f: cache.get(f, id_) for f in fields} for id_ in records._ids})
        self.pool.triggers.after_change(records, {field.name for field in fields})

    def _compute_fields(self, fields: Iterable[Field]) -> None:
        """Run the compute methods of ``fields`` on these records, each method once."""
        computed: set[Any] = set()
        for field in fields:
            method = field.related or field.compute
            if field.related or method not in computed:
                self._compute_field(field)
                computed.add(method)

    def _validate_constraints(self, names: set[str]) -> None:
        for method_name, fields in self._constraint_methods:
            if fields & names:
                getattr(self, method_name)()


class Model(BaseModel):
    """A model stored in its own table."""

    __slots__ = ()


class AbstractModel(BaseModel):
    """A model with no table, meant to be inherited (a mixin)."""

    __slots__ = ()
    _abstract = True


def _array_of(column: sa.Column) -> postgresql.ARRAY:
    """The PostgreSQL array type of ``column``'s values (of its variant for PostgreSQL, when
    it has one: JSONB for JSON)."""
    return postgresql.ARRAY(column.type._variant_mapping.get("postgresql", column.type))


def _truncate(column: sa.ColumnElement, granularity: str, dialect: str) -> sa.ColumnElement:
    """A date/datetime column truncated to ``granularity``."""
    if dialect == "postgresql":
        return sa.func.date_trunc(granularity, column)
    formats = {
        "hour": "%Y-%m-%d %H:00:00",
        "day": "%Y-%m-%d 00:00:00",
        "month": "%Y-%m-01 00:00:00",
        "year": "%Y-01-01 00:00:00",
    }
    if granularity == "week":  # the Monday of the week, like PostgreSQL's date_trunc
        return sa.func.strftime(
            "%Y-%m-%d 00:00:00", column, sa.text("'weekday 0'"), sa.text("'-6 days'")
        )
    return sa.func.strftime(formats[granularity], column)
