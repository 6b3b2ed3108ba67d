"""Keeping computed fields right when what they depend on changes.

From each computed field's ``@api.depends`` paths the registry derives, for every field a
path goes through, which computed fields must follow its changes and how to find their
records::

    job.thread_name depends on 'thread_id.name'
      change of llm.job.thread_id     -> the changed jobs themselves          (prefix '')
      change of llm.thread.name       -> jobs with ('thread_id', 'in', ids)   (prefix 'thread_id')

A One2many step also registers its inverse field, so creating or moving a child recomputes
the parent. Stored fields are recomputed and written; non-stored ones are dropped from the
cache and recomputed on the next read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .exceptions import RegistryError

if TYPE_CHECKING:
    from .fields import Field
    from .models import BaseModel
    from .registry import Registry

_MAX_DEPTH = 32

Affected = dict["Field", set[int]]


class Triggers:
    def __init__(self, registry: Registry):
        self.registry = registry
        self.dependents: defaultdict[tuple[str, str], list[tuple[Field, str]]] = defaultdict(list)
        self.inverse_one2many: defaultdict[tuple[str, str], list[Field]] = defaultdict(list)
        self.undeclared: defaultdict[str, list[Field]] = defaultdict(list)
        for model in registry.models.values():
            for field in model._fields.values():
                if field.type == "one2many":
                    self.inverse_one2many[(field.comodel_name, field.inverse_name)].append(field)
                if not field.computed:
                    continue
                if not field.depends and not field.store:
                    self.undeclared[model._name].append(field)
                for path in field.depends:
                    self._register(model, field, path)

    def _register(self, model: type[BaseModel], dependent: Field, path: str) -> None:
        parts = path.split(".")
        current = model
        for index, part in enumerate(parts):
            field = current._fields.get(part)
            if field is None:
                raise RegistryError(
                    f"Field '{dependent.name}' of '{dependent.model_name}' depends on "
                    f"'{path}', but '{current._name}' has no field '{part}'."
                )
            prefix = ".".join(parts[:index])
            self.dependents[(current._name, part)].append((dependent, prefix))
            if field.type == "one2many":  # a child created or moved changes its parents
                self.dependents[(field.comodel_name, field.inverse_name)].append(
                    (dependent, ".".join(parts[: index + 1]))
                )
            if index + 1 < len(parts):
                if not field.relational:
                    raise RegistryError(
                        f"Field '{dependent.name}' of '{dependent.model_name}' depends on "
                        f"'{path}', but '{part}' is not a relational field."
                    )
                current = self.registry[field.comodel_name]

    def _affected(
        self,
        records: BaseModel,
        names: set[str],
        skip_own: bool,
        done: Iterable[Field] = (),
        created: bool = False,
    ) -> Affected:
        affected: Affected = defaultdict(set)
        for name in names:
            for dependent, prefix in self.dependents.get((records._name, name), ()):
                if not dependent.store:
                    records.env.cache.invalidate([dependent])
                elif not prefix:
                    if not skip_own and dependent not in done:
                        affected[dependent].update(records._ids)
                elif records._ids and not (created and self._points_here(dependent, prefix)):
                    target = records.env(su=True)[dependent.model_name]
                    affected[dependent].update(
                        target.search([(prefix, "in", list(records._ids))])._ids
                    )
        return affected

    def _points_here(self, dependent: Field, prefix: str) -> bool:
        """Whether the records that ``dependent`` follows through ``prefix`` are found by
        their own link to the changed records (a Many2one or Many2many first step): no
        record links to records just created, except through the creation's own relations,
        which trigger on their own."""
        first = self.registry[dependent.model_name]._fields[prefix.split(".")[0]]
        return first.type in ("many2one", "many2many")

    def before_change(
        self, records: BaseModel, names: set[str], deleting: bool = False
    ) -> Affected:
        """Records of other models that depend on these through relations about to change
        (their links may be gone after the change)."""
        relational = {n for n in names if records._fields[n].relational or deleting}
        if not relational:
            return {}
        return self._affected(records, relational, skip_own=True)

    def after_change(
        self,
        records: BaseModel,
        names: set[str],
        created: bool = False,
        before: Affected | None = None,
        precomputed: Sequence[Field] = (),
    ) -> None:
        """Invalidate or recompute what depends on ``names`` of ``records`` (and on the
        ``precomputed`` fields they got in the same statement, which are not recomputed). A
        computed field among ``names`` was given its value by the write: as in Odoo, it is
        protected, not recomputed from the other fields written with it."""
        names = names | {field.name for field in precomputed}
        fields = records._fields
        given = [fields[name] for name in names if fields[name].compute]
        cache = records.env.cache
        for name in names:
            for one2many in self.inverse_one2many.get((records._name, name), ()):
                cache.invalidate([one2many])
        cache.invalidate(self.undeclared.get(records._name, ()))
        affected = self._affected(records, names, skip_own=created, done=given, created=created)
        for dependent, ids in (before or {}).items():
            affected.setdefault(dependent, set()).update(ids)
        if not affected:
            return
        cr = records.env.cr
        cr.trigger_depth += 1
        try:
            if cr.trigger_depth > _MAX_DEPTH:
                raise RegistryError(
                    "Computed fields depend on each other in a cycle: "
                    + ", ".join(str(f) for f in affected)
                )
            batches: defaultdict[tuple[str, frozenset[int]], list[Field]] = defaultdict(list)
            for dependent, ids in affected.items():
                batches[(dependent.model_name, frozenset(ids))].append(dependent)
            for (model_name, ids), dependents in batches.items():
                targets = records.env(su=True)[model_name].browse(sorted(ids))
                if before:  # found before a deletion: some may have gone with it
                    targets = targets.exists()
                targets._recompute(dependents)
        finally:
            cr.trigger_depth -= 1

    def relation_changed(self, record: BaseModel, field: Field) -> None:
        """A Many2many link of ``record`` was added or removed."""
        record.env.cache.invalidate([field], record._ids)
        self.after_change(record, {field.name})
