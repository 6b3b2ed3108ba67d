"""Transactions and environments.

A ``Cursor`` is one database transaction (an SQLAlchemy ``Connection``) plus the record cache
that is valid inside it. An ``Environment`` is a view of that transaction as one user with one
context: ``env['model']`` gives an empty recordset of the model bound to it.

Writes go to the database immediately (there is no deferred flush), so plain SQL run on
``env.cr`` always sees what the ORM wrote. ``cr.commit()`` starts a new transaction and empties
the cache, so values committed by other processes become visible.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .database import availability, raise_if_unavailable
from .exceptions import MissingError, RegistryError, ValidationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Result

    from .fields import Field
    from .models import BaseModel
    from .registry import Registry

SUPERUSER_ID = 1


def user_id(user: Any) -> int:
    """The id of ``user``: a ``res.users`` id or record."""
    if isinstance(user, int) and not isinstance(user, bool):
        return user
    if getattr(user, "_name", None) == "res.users" and len(user) == 1:
        return user.id
    raise ValidationError(f"A user is a res.users id or record, got {user!r}.")


class frozendict(dict):
    """A dict that cannot be changed (contexts are shared between recordsets)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("The context cannot be changed; use with_context() instead.")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))


class Cache:
    """Field values per record id, for one transaction: ``{field: {id: value}}``."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: defaultdict[Field, dict[int, Any]] = defaultdict(dict)

    def contains(self, field: Field, id_: int) -> bool:
        return id_ in self._data.get(field, ())

    def get(self, field: Field, id_: int) -> Any:
        """The cached value; raises KeyError when it is not cached."""
        return self._data[field][id_]

    def set(self, field: Field, id_: int, value: Any) -> None:
        self._data[field][id_] = value

    def update(self, field: Field, values: Mapping[int, Any]) -> None:
        self._data[field].update(values)

    def get_values(self, field: Field, ids: Iterable[int]) -> Iterator[Any]:
        """The cached values of ``field`` for those of ``ids`` that are cached."""
        values = self._data.get(field, {})
        for id_ in ids:
            if id_ in values:
                yield values[id_]

    def missing_ids(self, field: Field, ids: Iterable[int]) -> list[int]:
        values = self._data.get(field, {})
        return [id_ for id_ in ids if id_ not in values]

    def invalidate(self, fields: Iterable[Field] | None = None, ids: Iterable[int] | None = None):
        """Forget values: of the given fields (all when None), for the given ids (all when None)."""
        targets = list(self._data) if fields is None else list(fields)
        id_list = None if ids is None else list(ids)
        for field in targets:
            if id_list is None:
                self._data.pop(field, None)
            else:
                values = self._data.get(field)
                if values:
                    for id_ in id_list:
                        values.pop(id_, None)

    def clear(self) -> None:
        self._data.clear()


class Cursor:
    """One database transaction at a time, and its cache.

    A transaction begins with the first statement after the cursor is opened or committed;
    the cursor takes a pooled connection then and gives it back when the transaction ends
    (commit, rollback), so an idle cursor holds no connection — a worker streaming many
    replies does not hold one per stream.

    A ``readonly`` cursor is for long readers: on SQLite its transactions do not take the
    write lock (writes through it may then fail when another process wrote meanwhile).

    Hooks registered with ``precommit`` run in the transaction, just before it commits (e.g.
    to send its notifications in one statement); those registered with ``postcommit`` run
    once it has committed (e.g. to wake workers for newly queued jobs). Both are dropped on
    rollback.
    """

    def __init__(self, registry: Registry, readonly: bool = False):
        self.registry = registry
        self.readonly = readonly
        self._connection: Connection | None = None
        self._closed = False
        self.cache = Cache()
        self.computing: dict[Field, set[int]] = {}
        self.user_groups: dict[int, frozenset[str]] = {}
        # What callers found once in this transaction and need not look for again (by a key
        # of their own; Odoo's ``cr.cache``): dropped when the transaction ends, or a
        # savepoint is rolled back.
        self.memo: dict[str, Any] = {}
        self.trigger_depth = 0
        self._atomic = 0
        self.transaction = 0  # changes when a transaction ends (commit, rollback)
        self._precommit: list[Callable[[], None]] = []
        self._postcommit: list[Callable[[], None]] = []

    @property
    def connection(self) -> Connection:
        """The connection of the current transaction (taken from the pool on first use)."""
        if self._connection is None:
            from .database import READONLY_OPTION

            if self._closed:
                raise RuntimeError(
                    "This cursor is closed: its unit of work ended. Read records inside "
                    "their `with registry.environment()` block, or open a new one."
                )
            try:
                self._connection = self.registry.engine.connect()
            except Exception as error:
                raise_if_unavailable(error)
                raise
            if self.readonly:
                self._connection.execution_options(**{READONLY_OPTION: True})
        return self._connection

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return self.registry.engine.dialect.name

    def execute(self, statement: Any, parameters: Any = None) -> Result:
        """Run a statement in the current transaction. A database that cannot be reached or
        is too busy raises ``DatabaseUnavailable`` (the unit of work may be retried)."""
        try:
            return self.connection.execute(statement, parameters)
        except Exception as error:
            raise_if_unavailable(error)
            raise

    def precommit(self, hook: Callable[[], None]) -> None:
        if hook not in self._precommit:
            self._precommit.append(hook)

    def postcommit(self, hook: Callable[[], None]) -> None:
        if hook not in self._postcommit:
            self._postcommit.append(hook)

    def commit(self) -> None:
        """Commit; the next statement starts a fresh transaction with an empty cache.

        When the connection fails during the commit, ``DatabaseUnavailable`` is raised and
        whether the transaction committed is unknown: units of work that may be retried must
        therefore be conditional (``write_where``), so that doing one twice is harmless."""
        hooks, self._precommit = self._precommit, []
        for hook in hooks:
            try:
                hook()
            except BaseException:
                self.rollback()
                raise
        if self._connection is not None:
            try:
                self._connection.commit()
            except Exception as error:
                self._discard()
                raise_if_unavailable(error)
                raise
            self._release()
            if not self.readonly:  # a write transaction got through: the database is back
                availability.reached()
        self._reset()
        hooks, self._postcommit = self._postcommit, []
        for hook in hooks:
            hook()

    def rollback(self) -> None:
        self._discard()
        self._reset()
        self._precommit, self._postcommit = [], []

    def _discard(self) -> None:
        """Roll the transaction back and give the connection back; a connection that broke
        (the server went away) is invalidated instead, so the pool opens a new one."""
        connection = self._connection
        if connection is None:
            return
        try:
            connection.rollback()
        except Exception:
            connection.invalidate()
        self._release()

    def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()  # back to the pool

    def _reset(self) -> None:
        self.transaction += 1
        self.cache.clear()
        self.user_groups.clear()
        self.memo.clear()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo everything done inside the block when it raises (cache and memo included)."""
        try:
            nested = self.connection.begin_nested()
        except Exception as error:
            raise_if_unavailable(error)
            raise
        try:
            yield
        except BaseException:
            if nested.is_active:
                with contextlib.suppress(Exception):  # a dead connection: the error raised
                    nested.rollback()  # in the block is what matters
            self.cache.clear()
            self.memo.clear()
            raise
        try:
            nested.commit()
        except Exception as error:
            raise_if_unavailable(error)
            raise

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A unit that succeeds or fails whole: one savepoint for the block, none for the ORM
        calls inside it. Outside such a block every ``create``, ``write`` and ``unlink`` takes
        a savepoint of its own (two statements), so that a caller may catch its error and go
        on; inside, an error leaves its call half-done until it leaves the block, which undoes
        everything the block did. Do not catch ORM errors inside the block (a ``savepoint()``
        inside it still undoes its own part alone). A block that begins its transaction
        takes no savepoint either: its error rolls the transaction back."""
        fresh = self._connection is None and not (self._precommit or self._postcommit)
        self._atomic += 1
        try:
            if fresh:
                try:
                    yield
                except BaseException:
                    self.rollback()
                    raise
            else:
                with self.savepoint():
                    yield
        finally:
            self._atomic -= 1

    def call_savepoint(self) -> contextlib.AbstractContextManager[None]:
        """The savepoint of one ORM call: none inside an ``atomic`` block (it has one)."""
        return contextlib.nullcontext() if self._atomic else self.savepoint()

    def close(self) -> None:
        self._discard()
        self._closed = True


class Environment(Mapping):
    """A user, a context and a transaction: the entry point to models (``env['x.y']``)."""

    def __init__(
        self,
        cr: Cursor,
        uid: int = SUPERUSER_ID,
        context: Mapping[str, Any] | None = None,
        su: bool = False,
    ):
        self.cr = cr
        self.registry = cr.registry
        self.uid = uid
        self.context = frozendict(context or {})
        self.su = su or uid == SUPERUSER_ID

    # -- models -----------------------------------------------------------------------------
    def __getitem__(self, model_name: str) -> BaseModel:
        return self.registry[model_name]._browse_empty(self)

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry.models)

    def __len__(self) -> int:
        return len(self.registry.models)

    def __contains__(self, model_name: object) -> bool:
        return model_name in self.registry.models

    def __call__(
        self,
        cr: Cursor | None = None,
        user: int | BaseModel | None = None,
        context: Mapping[str, Any] | None = None,
        su: bool | None = None,
    ) -> Environment:
        """A derived environment. Switching user without ``su`` drops superuser mode."""
        uid = self.uid if user is None else user_id(user)
        if su is None:
            su = self.su if user is None else False
        return Environment(cr or self.cr, uid, self.context if context is None else context, su)

    def __repr__(self) -> str:
        return f"<Environment uid={self.uid} su={self.su}>"

    @property
    def cache(self) -> Cache:
        return self.cr.cache

    def invalidate_all(self) -> None:
        """Forget every cached value of the transaction: the next reads see what other
        transactions committed (on PostgreSQL, at READ COMMITTED)."""
        self.cr.cache.clear()

    @property
    def user(self) -> BaseModel:
        """The current user, as a ``res.users`` record (in superuser mode)."""
        return self(su=True)["res.users"].browse(self.uid)

    def ref(self, xml_id: str) -> BaseModel:
        """The record with this external id (e.g. ``'base.group_user'``)."""
        for model_name in self.registry.xml_id_models:
            record = self(su=True)[model_name].search([("xml_id", "=", xml_id)], limit=1)
            if record:
                return record.with_env(self)
        raise RegistryError(f"No record has the external id {xml_id!r}.")

    def user_group_xml_ids(self) -> frozenset[str]:
        """External ids of the current user's groups, implied groups included (cached)."""
        cached = self.cr.user_groups.get(self.uid)
        if cached is None:
            user = self.user
            if not user.exists():
                raise MissingError(
                    f"No user has id {self.uid}: work as an existing res.users record "
                    "(registry.environment(user=...), with_user())."
                )
            cached = user._group_xml_ids()
            self.cr.user_groups[self.uid] = cached
        return cached

    # -- computed fields --------------------------------------------------------------------
    def is_computing(self, field: Field) -> bool:
        return field in self.cr.computing

    def mark_computed(self, field: Field, ids: Iterable[int]) -> None:
        self.cr.computing[field].update(ids)

    @contextlib.contextmanager
    def computing(self, field: Field) -> Iterator[set[int]]:
        """While inside, assigning ``field`` stores into the cache; yields the assigned ids."""
        outer = self.cr.computing.get(field)
        assigned: set[int] = set()
        self.cr.computing[field] = assigned
        try:
            yield assigned
        finally:
            if outer is None:
                del self.cr.computing[field]
            else:
                self.cr.computing[field] = outer
