"""Field declarations: what a model stores and how values move between Python and SQL.

A field object on a *definition* class only records its keyword arguments. When the registry
builds a model class it merges all definitions of a field (later addons win; ``selection_add``
extends) and creates a fresh field object per model (see ``model_classes``). That object is a
descriptor: reading ``record.field`` goes through the transaction's cache, writing calls
``record.write``.

Values live in three shapes:

- *column*: what SQLAlchemy sends to or gets from the database;
- *cache*: the normalised value kept per record in the transaction cache (a Many2one caches an
  id, an x2many a tuple of ids, a Datetime an aware UTC datetime);
- *record*: what ``record.field`` returns (a Many2one returns a recordset). Empty values read as
  ``False`` (``0`` for numbers, an empty recordset for relations), as in Odoo.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import reprlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.dialects import postgresql

from . import redaction
from .exceptions import RegistryError, ValidationError

if TYPE_CHECKING:
    from .models import BaseModel

UNSET: Any = object()
# Integer, Many2one and id columns are INTEGER: 32 bits on PostgreSQL, whatever SQLite takes.
INTEGER_RANGE = (-(2**31), 2**31 - 1)


class Field:
    """Base of every field type. Keyword arguments are kept as declared, for merging."""

    type: str = ""
    column_type: Any = None
    relational = False
    empty_value: Any = False
    # Names of arguments every field accepts; subclasses add their own.
    common_args = (
        "string",
        "help",
        "required",
        "default",
        "index",
        "readonly",
        "compute",
        "store",
        "related",
        "search",
        "copy",
        "precompute",
    )
    extra_args: tuple[str, ...] = ()

    def __init__(self, string: str | None = None, **kwargs: Any):
        if string is not None:
            kwargs["string"] = string
        unknown = set(kwargs) - set(self.common_args) - set(self.extra_args)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unknown argument(s): {', '.join(sorted(unknown))}"
            )
        self.args: dict[str, Any] = kwargs
        self.name: str = ""
        self.model_name: str = ""

    # -- set-up, called once per built model class --------------------------------------
    def setup(self, name: str, model_name: str, args: dict[str, Any]) -> None:
        """Give the merged arguments to a fresh field object of a built model class."""
        self.name = name
        self.model_name = model_name
        self.args = args
        self.string: str = args.get("string") or name.replace("_", " ").capitalize()
        self.help: str = args.get("help", "")
        self.required: bool = args.get("required", False)
        self.default = args.get("default", UNSET)
        self.index: bool = args.get("index", False)
        self.related: str | None = args.get("related")
        self.compute = args.get("compute")
        self.search = args.get("search")
        self.store: bool = args.get("store", not (self.compute or self.related))
        self.readonly: bool = args.get("readonly", bool(self.compute or self.related))
        self.copy: bool = args.get("copy", not (self.compute or self.related))
        # Computed before its record is written (Odoo's precompute): its value goes in the
        # INSERT that creates the record and in the UPDATE that changes what it depends on,
        # not in an UPDATE after them. Its compute must read only the record's own values
        # (and records they point to): at creation, the record has no id yet.
        self.precompute: bool = args.get("precompute", False)
        if self.precompute and not (self.store and self.computed):
            raise RegistryError(
                f"Field '{model_name}.{name}' is precomputed but not a stored computed field."
            )
        self.depends: tuple[str, ...] = ()

    @property
    def column(self) -> bool:
        """Whether the field is a column of the model's table."""
        return self.store

    @property
    def computed(self) -> bool:
        return bool(self.compute or self.related)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name}.{self.name})"

    # -- SQL ------------------------------------------------------------------------------
    def sql_column(self) -> sa.Column:
        return sa.Column(self.name, self.column_type, index=self.index)

    # -- value conversions ----------------------------------------------------------------
    def convert_to_cache(self, value: Any, record: BaseModel | None = None) -> Any:
        """Validate a value given to create/write and normalise it for the cache."""
        if value is None or value is False:
            return None
        return self._convert(value)

    def _convert(self, value: Any) -> Any:
        return value

    def convert_from_column(self, value: Any) -> Any:
        """Normalise a value read from the database into its cache shape."""
        return value

    def convert_to_column(self, value: Any) -> Any:
        """A cache value as the database parameter."""
        return value

    def convert_to_record(self, value: Any, record: BaseModel) -> Any:
        """A cache value as returned by ``record.field``."""
        return self.empty_value if value is None else value

    def convert_to_read(self, value: Any, record: BaseModel) -> Any:
        """A cache value as returned by ``read()``: plain data, no recordsets."""
        return self.convert_to_record(value, record)

    def type_error(self, value: Any, expected: str) -> ValidationError:
        return ValidationError(
            f"Field '{self.name}' of '{self.model_name}' expects {expected}, "
            f"got {type(value).__name__} {_short_repr(value)}."
        )

    # -- descriptor protocol -------------------------------------------------------------
    def __get__(self, record: BaseModel | None, owner: type | None = None) -> Any:
        if record is None:
            return self
        if not record._ids:  # as in Odoo: an empty recordset reads as the empty value
            return self.convert_to_record(None, record)
        record.ensure_one()
        return self.convert_to_record(record._read_value(self), record)

    def __set__(self, record: BaseModel, value: Any) -> None:
        if record.env.is_computing(self):
            for one in record:
                one.env.cache.set(self, one.id, self.convert_to_cache(value, one))
            record.env.mark_computed(self, record._ids)
            return
        record.write({self.name: value})


def _out_of_range(field: Field, value: int) -> ValidationError | None:
    low, high = INTEGER_RANGE
    if low <= value <= high:
        return None
    return ValidationError(
        f"Field '{field.name}' of '{field.model_name}' holds integers from {low} to {high}, "
        f"got {_short_repr(value)}."
    )


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as text on every database (None when it can): a NUL
    character (PostgreSQL refuses it) or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone surrogate (not valid Unicode)"
    return None


def _json_text_problem(value: Any) -> str | None:
    """``text_problem`` of the first string of a JSON value (keys included) that has one."""
    pending = [value]  # a stack, not recursion: JSON may nest deeper than Python recurses
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return problem
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # nested deeper than repr() goes
        text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Boolean(Field):
    type = "boolean"
    column_type = sa.Boolean()

    def convert_to_cache(self, value, record=None):
        return bool(value)

    def convert_from_column(self, value):
        return bool(value)

    def convert_to_record(self, value, record):
        return bool(value)


class Integer(Field):
    type = "integer"
    column_type = sa.Integer()
    empty_value = 0

    def _convert(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise self.type_error(value, "an integer")
            value = int(value)
        error = _out_of_range(self, value)
        if error:
            raise error
        return value


class Float(Field):
    type = "float"
    column_type = sa.Float()
    empty_value = 0.0
    extra_args = ("digits",)

    def _convert(self, value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.type_error(value, "a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):  # NaN and infinities: no JSON, and no order for NaN
            raise self.type_error(value, "a finite number")
        return number


class Char(Field):
    type = "char"
    extra_args = ("size", "trim")

    @property
    def column_type(self):
        return sa.String(self.args.get("size"))

    def _convert(self, value):
        if not isinstance(value, str):
            raise self.type_error(value, "a string")
        problem = text_problem(value)
        if problem:
            raise ValidationError(f"Field '{self.name}' of '{self.model_name}' holds {problem}.")
        size = self.args.get("size")
        if size and len(value) > size:
            raise ValidationError(
                f"Field '{self.name}' of '{self.model_name}' holds at most {size} characters, "
                f"got {len(value)}."
            )
        return value


class Text(Char):
    type = "text"
    column_type = sa.Text()
    extra_args = ()


class Selection(Field):
    """A value from a fixed list of ``(value, label)`` pairs; addons extend it with
    ``selection_add``. ``selection`` may be a list or a method name/callable returning one."""

    type = "selection"
    column_type = sa.String()
    extra_args = ("selection", "selection_add", "ondelete")

    def __init__(self, selection=None, string: str | None = None, **kwargs: Any):
        if selection is not None:
            kwargs["selection"] = selection
        super().__init__(string, **kwargs)

    def setup(self, name, model_name, args):
        super().setup(name, model_name, args)
        self.selection = args.get("selection", [])
        self._allowed = None

    def allowed(self, model: BaseModel) -> frozenset | set:
        """The accepted values (fixed lists are computed once)."""
        if isinstance(self.selection, list | tuple):
            if getattr(self, "_allowed", None) is None:
                self._allowed = frozenset(key for key, _label in self.selection)
            return self._allowed
        return {key for key, _label in self.get_values(model)}

    def get_values(self, model: BaseModel) -> list[tuple[str, str]]:
        selection = self.selection
        if isinstance(selection, str):
            selection = getattr(model, selection)()
        elif callable(selection):
            selection = selection(model)
        return list(selection)

    def _convert(self, value):
        return value

    def convert_to_cache(self, value, record=None):
        if value is None or value is False:
            return None
        if record is not None and value not in self.allowed(record):
            allowed = [key for key, _label in self.get_values(record)]
            raise ValidationError(
                f"Field '{self.name}' of '{self.model_name}' does not accept "
                f"{_short_repr(value)}; allowed values: {', '.join(map(str, allowed))}."
            )
        return value


def merge_selection(base: Sequence, additions: Sequence) -> list:
    """Odoo's ``selection_add``: new pairs are appended, or placed before the value named by
    the next ``(value,)`` marker; a pair whose value already exists replaces its label::

        merge_selection([("a", "A"), ("b", "B")], [("c", "C"), ("b",)])
        == [("a", "A"), ("c", "C"), ("b", "B")]
    """
    result = [tuple(item) for item in base]
    pending: list[tuple] = []
    for item in additions:
        keys = [key for key, *_ in result]
        if len(item) == 1:
            if item[0] not in keys:
                raise ValueError(
                    f"selection_add marker {tuple(item)!r} names no value of the selection "
                    f"({', '.join(map(repr, keys))})."
                )
            position = keys.index(item[0])
            result[position:position] = pending
            pending = []
            continue
        key, label = item
        if key in keys:
            result[keys.index(key)] = (key, label)
        else:
            pending.append((key, label))
    return result + pending


class Date(Field):
    type = "date"
    column_type = sa.Date()

    def _convert(self, value):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise self.type_error(value, "a date or an ISO date string")


class Datetime(Field):
    """A moment in time. Stored in UTC; read back timezone-aware (UTC). A naive value given
    to create/write is taken to be UTC."""

    type = "datetime"
    column_type = sa.DateTime(timezone=True)

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def _convert(self, value):
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise self.type_error(value, "a datetime or an ISO datetime string") from None
        if not isinstance(value, dt.datetime):
            raise self.type_error(value, "a datetime")
        return to_utc(value)

    def convert_from_column(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return to_utc(value)


def to_utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class Json(Field):
    """Any JSON value (JSONB on PostgreSQL); NaN and infinities are refused, as JSON has
    none."""

    type = "json"
    column_type = sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )

    def convert_to_cache(self, value, record=None):
        if value is None or value is False:
            return None
        try:
            # A round trip copies the value (no aliasing with the caller's dict) and proves
            # it serialisable before it reaches the database.
            copy = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as exc:
            raise self.type_error(value, f"JSON data ({exc})") from None
        problem = _json_text_problem(copy)
        if problem:
            raise self.type_error(value, f"JSON data; one of its strings holds {problem}")
        return copy


class Binary(Field):
    type = "binary"
    column_type = sa.LargeBinary()

    def _convert(self, value):
        if isinstance(value, str):
            return value.encode()
        if not isinstance(value, bytes | bytearray | memoryview):
            raise self.type_error(value, "bytes")
        return bytes(value)

    def convert_from_column(self, value):
        return bytes(value) if value is not None else None


class Secret(Field):
    """A secret (API key, token) encrypted at rest with the configured Fernet key.

    It reads as ``pydantic.SecretStr``, which prints as ``**********``: the clear text is only
    reachable through ``.get_secret_value()``, so a stray log line or ``read()`` cannot leak it.
    """

    type = "secret"
    column_type = sa.Text()

    def _convert(self, value):
        if isinstance(value, SecretStr):
            return value
        if not isinstance(value, str):
            raise self.type_error(value, "a string")
        problem = text_problem(value)
        if problem:  # the value itself is not shown: it is a secret
            raise ValidationError(f"Field '{self.name}' of '{self.model_name}' holds {problem}.")
        redaction.remember(value)
        return SecretStr(value)

    def convert_to_column(self, value):
        if value is None:
            return None
        return _fernet().encrypt(value.get_secret_value().encode()).decode()

    def convert_from_column(self, value):
        if value is None:
            return None
        from cryptography.fernet import InvalidToken

        from .config import secret_key_source

        try:
            clear = _fernet().decrypt(value.encode()).decode()
        except InvalidToken:
            raise ValidationError(
                f"Field '{self.name}' of '{self.model_name}' cannot be decrypted with "
                f"{secret_key_source()}: it was written with another key. Configure that "
                "key (LLMJOBS_SECRET_KEY or LLMJOBS_SECRET_KEY_FILE), or set the value again."
            ) from None
        redaction.remember(clear)
        return SecretStr(clear)


_FERNET = None


def _fernet():
    global _FERNET
    if _FERNET is None:
        from cryptography.fernet import Fernet

        from .config import secret_key, secret_key_source

        try:
            _FERNET = Fernet(secret_key())
        except ValueError:
            raise RegistryError(
                f"The secret key from {secret_key_source()} is not a Fernet key (32 url-safe "
                "base64-encoded bytes); generate one with `python -c 'from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
            ) from None
    return _FERNET


# -- relational fields ----------------------------------------------------------------------
class _Relational(Field):
    relational = True
    extra_args = ("comodel_name", "domain", "context", "auto_join")

    def __init__(self, comodel_name: str | None = None, string: str | None = None, **kwargs):
        if comodel_name is not None:
            kwargs["comodel_name"] = comodel_name
        super().__init__(string, **kwargs)

    def setup(self, name, model_name, args):
        super().setup(name, model_name, args)
        self.comodel_name: str = args.get("comodel_name", "")
        if not self.comodel_name:
            raise TypeError(f"Field {model_name}.{name} needs a comodel_name.")

    def convert_to_record(self, value, record):
        comodel = record.env[self.comodel_name]
        ids = () if value is None else (value,) if isinstance(value, int) else tuple(value)
        return comodel._browse(ids, _LazyPrefetch(record, self))


class _LazyPrefetch:
    """The prefetch set of records reached through a relational field: the field's values on
    all records of the source prefetch set that are already in cache. Evaluated only when the
    target records are actually fetched, which keeps iteration over N records linear."""

    __slots__ = ("field", "record")

    def __init__(self, record: BaseModel, field: _Relational):
        self.record = record
        self.field = field

    def __iter__(self):
        cache = self.record.env.cache
        seen = set()
        for value in cache.get_values(self.field, self.record._prefetch_ids):
            for id_ in (value,) if isinstance(value, int) else value or ():
                if id_ not in seen:
                    seen.add(id_)
                    yield id_


class Many2one(_Relational):
    """A reference to one record of ``comodel_name``; ``ondelete`` is ``set null`` (default
    for optional fields), ``restrict`` (default for required ones) or ``cascade``."""

    type = "many2one"
    column_type = sa.Integer()
    extra_args = (*_Relational.extra_args, "ondelete")

    def setup(self, name, model_name, args):
        super().setup(name, model_name, args)
        self.ondelete: str = args.get("ondelete") or ("restrict" if self.required else "set null")
        if self.ondelete not in ("set null", "restrict", "cascade"):
            raise TypeError(
                f"Field {model_name}.{name}: ondelete must be 'set null', 'restrict' or "
                f"'cascade', not {self.ondelete!r}."
            )
        if self.ondelete == "set null" and self.required:
            raise TypeError(
                f"Field {model_name}.{name} is required, so ondelete cannot be 'set null'."
            )

    def sql_column(self, comodel_table: str) -> sa.Column:
        return sa.Column(
            self.name,
            sa.Integer(),
            sa.ForeignKey(f"{comodel_table}.id", ondelete=self.ondelete.upper()),
            index=True,
        )

    def convert_to_cache(self, value, record=None):
        if value is None or value is False:
            return None
        if isinstance(value, bool):
            raise self.type_error(value, "a record id or a record")
        if isinstance(value, int):
            error = _out_of_range(self, value)
            if error:
                raise error
            return value
        if hasattr(value, "_ids") and getattr(value, "_name", None) == self.comodel_name:
            if len(value._ids) > 1:
                raise ValidationError(
                    f"Field '{self.name}' of '{self.model_name}' takes one record, got "
                    f"{len(value._ids)}."
                )
            return value._ids[0] if value._ids else None
        raise self.type_error(value, f"an id or a '{self.comodel_name}' record")

    def convert_to_read(self, value, record):
        return value if value is not None else False


class _X2many(_Relational):
    """Base of One2many and Many2many: values are tuples of ids; writes take Odoo commands
    (see ``Command``) or a plain list of ids (meaning "set")."""

    store = False

    @property
    def column(self) -> bool:
        return False

    def convert_to_cache(self, value, record=None):
        raise AssertionError("x2many values are written through commands")

    def convert_to_read(self, value, record):
        return list(value or ())


class One2many(_X2many):
    type = "one2many"
    extra_args = (*_Relational.extra_args, "inverse_name")

    def __init__(self, comodel_name=None, inverse_name=None, string=None, **kwargs):
        if inverse_name is not None:
            kwargs["inverse_name"] = inverse_name
        super().__init__(comodel_name, string, **kwargs)

    def setup(self, name, model_name, args):
        super().setup(name, model_name, args)
        self.inverse_name: str = args.get("inverse_name", "")
        if not self.inverse_name:
            raise TypeError(f"One2many {model_name}.{name} needs an inverse_name.")
        self.store = True  # not a column, but searchable and readable without compute


class Many2many(_X2many):
    type = "many2many"
    extra_args = (*_Relational.extra_args, "relation", "column1", "column2")

    def __init__(
        self, comodel_name=None, relation=None, column1=None, column2=None, string=None, **kwargs
    ):
        for key, value in (("relation", relation), ("column1", column1), ("column2", column2)):
            if value is not None:
                kwargs[key] = value
        super().__init__(comodel_name, string, **kwargs)

    def setup(self, name, model_name, args):
        super().setup(name, model_name, args)
        tables = sorted([model_name.replace(".", "_"), self.comodel_name.replace(".", "_")])
        self.relation: str = args.get("relation") or f"{tables[0]}_{tables[1]}_rel"
        self.column1: str = args.get("column1") or f"{model_name.replace('.', '_')}_id"
        self.column2: str = args.get("column2") or f"{self.comodel_name.replace('.', '_')}_id"
        if self.column1 == self.column2:
            self.column1, self.column2 = "id1", "id2"
        self.store = True


class Command:
    """Odoo's x2many write commands, e.g. ``{'tag_ids': [Command.link(3), Command.create({})]}``."""

    CREATE, UPDATE, DELETE, UNLINK, LINK, CLEAR, SET = range(7)

    @classmethod
    def create(cls, values: dict) -> tuple:
        return (cls.CREATE, 0, values)

    @classmethod
    def update(cls, id_: int, values: dict) -> tuple:
        return (cls.UPDATE, id_, values)

    @classmethod
    def delete(cls, id_: int) -> tuple:
        return (cls.DELETE, id_, 0)

    @classmethod
    def unlink(cls, id_: int) -> tuple:
        return (cls.UNLINK, id_, 0)

    @classmethod
    def link(cls, id_: int) -> tuple:
        return (cls.LINK, id_, 0)

    @classmethod
    def clear(cls) -> tuple:
        return (cls.CLEAR, 0, 0)

    @classmethod
    def set(cls, ids: Sequence[int]) -> tuple:
        return (cls.SET, 0, list(ids))


def default_value(field: Field, model: BaseModel) -> Any:
    """The field's default for a new record of ``model`` (``UNSET`` when it has none)."""
    default = field.default
    if default is UNSET:
        return UNSET
    return default(model) if isinstance(default, Callable) else default


UNSET = UNSET
