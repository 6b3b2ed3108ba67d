"""The registry: loaded addons, built model classes, database engine and schema.

::

    Registry(db_url, addons_path, addons)
      1. find addons (core/addons/base + addons_path), order them by dependencies
      2. import them: their model classes record themselves as definitions
      3. build one class per model (model_classes), derive computed-field triggers
      4. generate tables (schema), open the engine
      5. sync the schema (additive only) and run every model's _register_hook
         (base: declared groups, the superuser) — once, under a lock

    with registry.environment(user=uid) as env:    # one transaction; commit or roll back
        env["x.partner"].search([...])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import addons as addon_loader
from . import schema
from .config import database_url
from .database import create_engine, raise_if_unavailable
from .environment import SUPERUSER_ID, Cursor, Environment, user_id
from .exceptions import RegistryError
from .model_classes import build_models
from .models import BaseModel
from .security import SecurityPolicy
from .triggers import Triggers

_logger = logging.getLogger(__name__)
_SCHEMA_LOCK_KEY = 0x6C6C6D6A  # PostgreSQL advisory lock serialising schema sync ("llmj")


class Registry(Mapping):
    """Models of a set of addons bound to one database."""

    def __init__(
        self,
        db_url: str | None = None,
        addons_path: Iterable[str | Path] | None = None,
        addons: Iterable[str] | None = None,
        *,
        sync_schema: bool = True,
        engine_options: dict[str, Any] | None = None,
    ):
        self.db_url = database_url(db_url)
        folders = addon_loader.addon_search_path(addons_path)
        addon_loader.extend_import_path(folders)
        self.manifests = addon_loader.resolve_order(
            addon_loader.discover(folders), None if addons is None else list(addons)
        )
        for manifest in self.manifests:
            addon_loader.import_addon(manifest)
        self.addons = [m.technical_name for m in self.manifests]
        # (constraint name, SQLite's 'table.column, ...' form) -> message for people
        self.sql_constraint_messages: dict[tuple[str, str], str] = {}
        self.models: dict[str, type[BaseModel]] = build_models(self, self.addons)
        self.metadata, self.relation_tables = schema.build_metadata(self)
        self.triggers = Triggers(self)
        self.security = SecurityPolicy()
        for manifest in self.manifests:
            self.security.load_addon(manifest, list(self.models))
        self.xml_id_models = [
            name for name, model in self.models.items() if "xml_id" in model._fields
        ]
        self.engine = create_engine(self.db_url, **(engine_options or {}))
        if sync_schema:
            self.sync_schema()

    # -- mapping of model names to classes ---------------------------------------------------
    def __getitem__(self, model_name: str) -> type[BaseModel]:
        try:
            return self.models[model_name]
        except KeyError:
            raise RegistryError(
                f"Unknown model '{model_name}': no loaded addon defines it (loaded addons: "
                f"{', '.join(self.addons)})."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"<Registry {self.engine.url.render_as_string(hide_password=True)}>"

    # -- database ---------------------------------------------------------------------------
    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def sync_schema(self) -> list[str]:
        """Create missing tables and columns, then run the models' ``_register_hook``."""
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                done = schema.sync(connection, self.metadata)
        except Exception as error:
            raise_if_unavailable(error)
            raise
        with self.environment() as env:
            for model_name in self.models:
                if not self.models[model_name]._abstract:
                    env[model_name]._register_hook()
        return done

    def cursor(self, readonly: bool = False) -> Cursor:
        return Cursor(self, readonly=readonly)

    @contextlib.contextmanager
    def environment(
        self,
        user: int | BaseModel | None = None,
        context: Mapping[str, Any] | None = None,
        su: bool | None = None,
        readonly: bool = False,
    ) -> Iterator[Environment]:
        """One unit of work: commits when the block ends, rolls everything back on error.

        Without ``user`` it runs as the superuser; with one, under that user's access rights
        (``su=True`` keeps the user but skips the checks). ``readonly`` is for long reads
        (see ``Cursor``).
        """
        uid = SUPERUSER_ID if user is None else user_id(user)
        cr = self.cursor(readonly=readonly)
        try:
            yield Environment(cr, uid, context, su=bool(su))
            cr.commit()
        except BaseException:
            cr.rollback()
            raise
        finally:
            cr.close()

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()
