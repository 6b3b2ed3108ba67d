"""Building the model classes of a registry from the addons' definition classes.

::

    addon base         class Users(Model): _name = 'res.users'        (definition U1)
    addon llm_thread   class Thread(Model): _name = 'llm.thread'       (definition T1)
    addon llm_job      class Thread(Model): _inherit = 'llm.thread'    (definition T2)

    registry class 'llm.thread' = type('llm.thread', (T2, T1), {...fields...})
    MRO: [llm.thread, T2, T1, Model, BaseModel]  ->  super() in T2 calls T1

Definitions are never changed. For each model the registry creates one class whose bases are
its definitions, newest first (addons load in dependency order, so ``super()`` walks back
through the addons), followed by the classes of the models it copies (``_inherit`` with
another ``_name``). All definitions are collected before any class is built, so a model that
copies ``a`` sees every extension of ``a``.

Fields are merged per name, oldest definition first: later keyword arguments win,
``selection_add`` extends the selection, and a fresh field object is created for each model
class (field objects are never shared between models or registries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import fields
from .exceptions import RegistryError
from .models import DEFINITIONS, BaseModel

if TYPE_CHECKING:
    from .registry import Registry


def _magic_fields() -> dict[str, fields.Field]:
    """Fields every model has, as if declared by a definition older than all others."""
    return {
        "create_date": fields.Datetime("Created on", readonly=True),
        "write_date": fields.Datetime("Last updated on", readonly=True),
        "create_uid": fields.Many2one("res.users", "Created by", readonly=True),
        "write_uid": fields.Many2one("res.users", "Last updated by", readonly=True),
        "display_name": fields.Char("Display name", compute="_compute_display_name"),
    }


def collect_definitions(
    addons: Sequence[str],
) -> tuple[dict[str, list[type]], dict[str, list[str]]]:
    """Definitions per model (oldest first) and the models each model copies."""
    definitions: dict[str, list[type]] = {}
    parents: dict[str, list[str]] = {}
    origin: dict[str, str] = {}
    for addon in addons:
        for cls in DEFINITIONS.get(addon, ()):
            name, inherit = cls._name, list(cls._inherit)
            if name in inherit:
                if name not in definitions:
                    raise RegistryError(
                        f"Addon '{addon}' extends model '{name}' ({cls.__module__}."
                        f"{cls.__qualname__}), but no addon it depends on defines it. Add the "
                        "defining addon to its manifest's 'depends'."
                    )
                definitions[name].append(cls)
                parents[name] += [p for p in inherit if p != name and p not in parents[name]]
            else:
                if name in definitions:
                    raise RegistryError(
                        f"Model '{name}' is defined twice: by addon '{origin[name]}' and by "
                        f"'{addon}' ({cls.__qualname__}). To extend it, set _inherit = '{name}'."
                    )
                definitions[name] = [cls]
                parents[name] = inherit
                origin[name] = addon
            for parent in parents[name]:
                if parent not in definitions:
                    raise RegistryError(
                        f"Model '{name}' (addon '{addon}') inherits from '{parent}', which no "
                        "loaded addon defines before it."
                    )
    return definitions, parents


def build_models(registry: Registry, addons: Sequence[str]) -> dict[str, type[BaseModel]]:
    """One class per model, in dependency order of the models they copy."""
    definitions, parents = collect_definitions(addons)
    classes: dict[str, type[BaseModel]] = {}

    def build(name: str) -> type[BaseModel]:
        if name in classes:
            return classes[name]
        bases = tuple(reversed(definitions[name])) + tuple(build(p) for p in parents[name])
        namespace = {"_name": name, "pool": registry, "__module__": bases[0].__module__}
        try:
            cls = type(name, bases, namespace)
        except TypeError as exc:
            raise RegistryError(f"Cannot build model '{name}': {exc}") from None
        abstract = [base._abstract for base in definitions[name] if "_abstract" in vars(base)]
        cls._abstract = bool(abstract and abstract[0]) or definitions[name][0]._abstract
        classes[name] = cls
        return cls

    for name in definitions:
        build(name)
    for cls in classes.values():
        _setup_class(cls)
    return classes


def _definition_classes(cls: type) -> list[type]:
    """The definition classes in the MRO of a built class, oldest first."""
    return [
        klass
        for klass in reversed(cls.__mro__)
        if issubclass(klass, BaseModel)
        and "pool" not in vars(klass)
        and ("_name" in vars(klass) or "_inherit" in vars(klass))
    ]


def _setup_class(cls: type[BaseModel]) -> None:
    name = cls._name
    declared: dict[str, list[fields.Field]] = {
        field_name: [field] for field_name, field in _magic_fields().items()
    }
    attrs: dict[str, object] = {}
    for klass in _definition_classes(cls):
        for attr in ("_description", "_order", "_rec_name", "_sql_constraints", "_table"):
            if attr in vars(klass):
                attrs[attr] = vars(klass)[attr]
        for field_name, value in vars(klass).items():
            if isinstance(value, fields.Field):
                declared.setdefault(field_name, []).append(value)
    table = attrs.pop("_table", None) or name.replace(".", "_")
    for attr, value in attrs.items():
        setattr(cls, attr, value)
    cls._table = table
    cls._fields = {}
    for field_name, versions in declared.items():
        if field_name == "id":
            raise RegistryError(f"Model '{name}' declares a field 'id', which is reserved.")
        field = _merge_field(name, field_name, versions)
        setattr(cls, field_name, field)
        cls._fields[field_name] = field
    for field in cls._fields.values():
        field.depends = _field_depends(cls, field)
    cls._constraint_methods = tuple(
        (attr, frozenset(method._constrains))
        for attr in dir(cls)
        if (method := getattr(cls, attr, None)) is not None and hasattr(method, "_constrains")
    )


def _merge_field(model: str, name: str, versions: list[fields.Field]) -> fields.Field:
    field_type = type(versions[0])
    args: dict = {}
    for version in versions:
        if type(version) is not field_type:
            raise RegistryError(
                f"Field '{name}' of '{model}' is a {field_type.__name__} and is redeclared as "
                f"a {type(version).__name__} ({version.args}); an extension cannot change a "
                "field's type. Declare a new field instead."
            )
        declared = dict(version.args)
        if "selection_add" in declared:
            try:
                declared["selection"] = fields.merge_selection(
                    args.get("selection", []), declared.pop("selection_add")
                )
            except ValueError as exc:
                raise RegistryError(f"Field '{name}' of '{model}': {exc}") from None
        args.update(declared)
    field = object.__new__(field_type)
    try:
        field.setup(name, model, args)
    except TypeError as exc:
        raise RegistryError(str(exc)) from None
    return field


def _field_depends(cls: type[BaseModel], field: fields.Field) -> tuple[str, ...]:
    if field.related:
        return (field.related,)
    if isinstance(field.compute, str):
        method = getattr(cls, field.compute, None)
        if method is None:
            raise RegistryError(
                f"Field '{field.name}' of '{cls._name}' is computed by '{field.compute}', "
                "which the model does not define."
            )
        depends = getattr(method, "_depends", ())
        if field.name == "display_name":
            depends = (*depends, cls._rec_name_field())
        return tuple(d for d in depends if d != "id")
    return tuple(getattr(field.compute, "_depends", ()))
