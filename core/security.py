"""Access rights and record rules, as declared by addons.

Access rights (``security/ir.model.access.csv``, Odoo's columns)::

    id,name,model_id:id,group_id:id,perm_read,perm_write,perm_create,perm_unlink
    access_thread_user,thread user,model_llm_thread,base.group_user,1,1,1,0

grant an operation on a model to a group (or to everyone when ``group_id`` is empty). Grants
add up; a model with no grant for an operation is closed to everyone but the superuser.

Record rules (``security/rules.yaml``)::

    - id: rule_thread_own
      model: llm.thread
      groups: [base.group_user]        # omit for a global rule
      domain: "[('user_id', '=', user.id)]"
      perm_unlink: false               # perms default to true: the operations it applies to

restrict which records an operation may touch. Global rules are AND-ed; the rules of the
user's groups are OR-ed among themselves, then AND-ed with the global ones (Odoo's
combination). Rule domains are evaluated with ``user`` (the current ``res.users`` record) in
scope, by a small evaluator that only allows literals and attribute access on ``user``.

Groups (``security/groups.yaml``) have an external id, a name and implied groups.
"""

from __future__ import annotations

import ast
import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .domain import AND, OR, normalize
from .exceptions import AccessError, DomainError, RegistryError

if TYPE_CHECKING:
    from .addons import Manifest
    from .environment import Environment

OPERATIONS = ("read", "write", "create", "unlink")
VERBS = {"read": "read", "write": "modify", "create": "create", "unlink": "delete"}


@dataclass(frozen=True)
class GroupDeclaration:
    xml_id: str
    name: str
    implied: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    xml_id: str
    model: str
    domain: str
    groups: frozenset[str]
    operations: frozenset[str]


@dataclass
class SecurityPolicy:
    """Every addon's declared groups, access rights and record rules."""

    groups: list[GroupDeclaration] = field(default_factory=list)
    # (model, operation) -> groups granted (None = everyone)
    grants: defaultdict[tuple[str, str], set[str | None]] = field(
        default_factory=lambda: defaultdict(set)
    )
    rules: defaultdict[tuple[str, str], list[Rule]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def load_addon(self, manifest: Manifest, model_names: Sequence[str]) -> None:
        folder = manifest.path / "security"
        addon = manifest.technical_name
        groups_file = folder / "groups.yaml"
        if groups_file.exists():
            for index, entry in enumerate(_yaml_list(groups_file), start=1):
                where = f"{groups_file} entry {index}"
                _require(entry, ("id", "name"), where)
                self.groups.append(
                    GroupDeclaration(
                        xml_id=_qualify(entry["id"], addon),
                        name=entry["name"],
                        implied=tuple(_qualify(g, addon) for g in entry.get("implied", ())),
                    )
                )
        access_file = folder / "ir.model.access.csv"
        if access_file.exists():
            self._load_access(access_file, addon, model_names)
        rules_file = folder / "rules.yaml"
        if rules_file.exists():
            self._load_rules(rules_file, addon, model_names)

    def _load_access(self, path: Path, addon: str, model_names: Sequence[str]) -> None:
        by_ref = {"model_" + name.replace(".", "_"): name for name in model_names}
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                where = f"{path} line {line}"
                _require(row, ("id", "model_id:id", "perm_read"), where)
                ref = row["model_id:id"].split(".")[-1]
                model = by_ref.get(ref)
                if model is None:
                    raise RegistryError(
                        f"{where}: unknown model reference '{row['model_id:id']}' (expected "
                        "model_<model name with dots as underscores> of a loaded model)."
                    )
                group = _qualify(row["group_id:id"], addon) if row.get("group_id:id") else None
                for operation in OPERATIONS:
                    value = (row.get(f"perm_{operation}") or "0").strip()
                    if value not in ("0", "1"):
                        raise RegistryError(f"{where}: perm_{operation} must be 0 or 1.")
                    if value == "1":
                        self.grants[(model, operation)].add(group)

    def _load_rules(self, path: Path, addon: str, model_names: Sequence[str]) -> None:
        for index, entry in enumerate(_yaml_list(path), start=1):
            where = f"{path} entry {index}"
            _require(entry, ("id", "model", "domain"), where)
            if entry["model"] not in model_names:
                raise RegistryError(f"{where}: unknown model '{entry['model']}'.")
            _parse_rule_domain(entry["domain"], where)
            operations = frozenset(op for op in OPERATIONS if entry.get(f"perm_{op}", True))
            rule = Rule(
                xml_id=_qualify(entry["id"], addon),
                model=entry["model"],
                domain=entry["domain"],
                groups=frozenset(_qualify(g, addon) for g in entry.get("groups", ())),
                operations=operations,
            )
            for operation in operations:
                self.rules[(rule.model, operation)].append(rule)


def _yaml_list(path: Path) -> list[dict]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise RegistryError(f"{path} must be a list of mappings.")
    return data


def _require(entry: dict, keys: Sequence[str], where: str) -> None:
    missing = [key for key in keys if not entry.get(key)]
    if missing:
        raise RegistryError(f"{where}: missing {', '.join(missing)}.")


def _qualify(xml_id: str, addon: str) -> str:
    return xml_id if "." in xml_id else f"{addon}.{xml_id}"


# -- checks --------------------------------------------------------------------------------
def check_model_access(env: Environment, model: str, operation: str) -> None:
    """Raise AccessError unless one of the user's groups (or everyone) has the right."""
    if env.su:
        return
    granted = env.registry.security.grants.get((model, operation), set())
    if None in granted:
        return
    if not granted.isdisjoint(env.user_group_xml_ids()):  # (a missing user raises here)
        return
    raise AccessError(
        f"You are not allowed to {VERBS[operation]} '{model}' records: no access right of "
        "your groups allows it. Ask an administrator for the right group."
    )


def rule_domain(env: Environment, model: str, operation: str) -> list:
    """The domain the user's records of ``model`` must satisfy for ``operation`` ([] = all)."""
    if env.su:
        return []
    rules = env.registry.security.rules.get((model, operation))
    if not rules:
        return []
    user_groups = env.user_group_xml_ids()
    user = env.user
    global_domains = [_eval_rule(r, user) for r in rules if not r.groups]
    group_domains = [_eval_rule(r, user) for r in rules if r.groups & user_groups]
    parts = [*global_domains]
    if group_domains:
        parts.append(OR(group_domains))
    return AND(parts)


def _eval_rule(rule: Rule, user: Any) -> list:
    return normalize(_evaluate(_parse_rule_domain(rule.domain, rule.xml_id), user))


def _parse_rule_domain(text: str, where: str) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise RegistryError(f"{where}: rule domain {text!r} is not valid: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(
            node,
            (
                ast.List,
                ast.Tuple,
                ast.Constant,
                ast.Name,
                ast.Attribute,
                ast.Load,
                ast.UnaryOp,
                ast.USub,
            ),
        ):
            raise RegistryError(
                f"{where}: rule domain {text!r} may only use literals and 'user.<field>'."
            )
        if isinstance(node, ast.Name) and node.id != "user":
            raise RegistryError(f"{where}: rule domain {text!r} names '{node.id}'; only 'user'.")
    return tree


def _evaluate(node: ast.expr, user: Any) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_evaluate(item, user) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, user)
    if isinstance(node, ast.Name):
        return user
    if isinstance(node, ast.Attribute):
        target = _evaluate(node.value, user)
        if node.attr.startswith("_"):
            raise DomainError(f"Rule domains cannot read private attribute '{node.attr}'.")
        return getattr(target, node.attr)
    raise DomainError(f"Unsupported expression in rule domain: {ast.dump(node)}")
