"""Odoo search domains compiled to SQLAlchemy expressions.

A domain is a list in prefix (Polish) notation: the operators ``'&'``, ``'|'`` (two operands)
and ``'!'`` (one) followed by their operands; terms are ``(field_path, operator, value)``;
consecutive terms are implicitly AND-ed::

    ['|', ('state', '=', 'queued'), ('state', '=', 'running'), ('thread_id.user_id', '=', 7)]
    == (state = 'queued' OR state = 'running') AND thread.user_id = 7

Term operators: ``= != < <= > >= in not in like not like ilike not ilike =like =ilike``.
``('f', '=', False)`` means "f is not set"; ``!=``, ``not in`` and the negative ``like``s
also match records where the field is not set, as in Odoo; ``'!'`` is the complement (the
records its operand does not match, unset fields included). ``like``/``ilike`` look for the
value as a substring (its ``%`` and ``_`` are literal); ``=like``/``=ilike`` take a pattern.
Dotted paths follow Many2one, One2many and Many2many fields. Values are always bound
parameters, never spliced into SQL, and are checked first against the field, so that a bad one
is a ``DomainError`` naming the term on either database: strings (without NUL characters or
lone surrogates) for text and selection fields, numbers for numeric ones, ids in the INTEGER
range for ids and relations; the ``like`` operators take text fields, booleans take ``=``,
``!=``, ``in`` and ``not in`` (False is a value, an unset field counts as False), and JSON and
binary fields are only searched for being set or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .exceptions import DomainError
from .fields import INTEGER_RANGE, text_problem

if TYPE_CHECKING:
    from .models import BaseModel

OPERATORS = ("&", "|", "!")
TERM_OPERATORS = frozenset(
    (
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "in",
        "not in",
        "like",
        "not like",
        "ilike",
        "not ilike",
        "=like",
        "=ilike",
    )
)
TRUE_TERM = (1, "=", 1)
FALSE_TERM = (0, "=", 1)
TEXT_TYPES = frozenset(("char", "text", "selection"))
# Fields whose values are not compared in SQL the same way on both databases: they can only
# be searched for being set or not.
SET_OR_NOT_TYPES = frozenset(("json", "binary"))


def _is_term(token: Any) -> bool:
    return isinstance(token, tuple | list) and len(token) == 3


def normalize(domain: Sequence) -> list:
    """The domain with its implicit ANDs made explicit; raises DomainError when malformed."""
    if not isinstance(domain, list | tuple):
        raise DomainError(f"A domain must be a list of terms, got {type(domain).__name__}.")
    result: list = []
    expected = 1
    for token in domain:
        if expected == 0:
            result.insert(0, "&")
            expected = 1
        if isinstance(token, str) and token in OPERATORS:
            expected += 0 if token == "!" else 1
        elif _is_term(token):
            expected -= 1
        else:
            raise DomainError(
                f"Invalid domain element {token!r}: expected '&', '|', '!' or a "
                "(field, operator, value) term."
            )
        result.append(tuple(token) if _is_term(token) else token)
    if result and expected != 0:
        raise DomainError(
            f"Malformed domain {list(domain)!r}: an operator is missing {expected} operand(s)."
        )
    return result


def AND(domains: Sequence[Sequence]) -> list:
    """The conjunction of several domains."""
    parts = [normalize(d) for d in domains if d]
    if not parts:
        return []
    return ["&"] * (len(parts) - 1) + [token for part in parts for token in part]


def OR(domains: Sequence[Sequence]) -> list:
    """The disjunction of several domains (an empty list of domains matches nothing)."""
    parts = [normalize(d) or [TRUE_TERM] for d in domains]
    if not parts:
        return [FALSE_TERM]
    return ["|"] * (len(parts) - 1) + [token for part in parts for token in part]


def compile_domain(model: BaseModel, domain: Sequence) -> sa.ColumnElement[bool]:
    """The WHERE clause selecting the records of ``model`` that match ``domain``."""
    stack: list[sa.ColumnElement[bool]] = []
    for token in reversed(normalize(domain)):
        if token == "!":  # the complement: a term that is NULL on a row (a comparison
            # with an empty column) counts as false, so its negation keeps the row, as in Odoo
            stack.append(sa.not_(sa.func.coalesce(stack.pop(), sa.false())))
        elif token in ("&", "|"):
            first, second = stack.pop(), stack.pop()
            stack.append(sa.and_(first, second) if token == "&" else sa.or_(first, second))
        else:
            stack.append(_compile_term(model, token))
    return stack[0] if stack else sa.true()


def subquery_ids(model: BaseModel, domain: Sequence) -> sa.Select:
    """``SELECT id`` of the records of ``model`` matching ``domain`` (no access rules)."""
    table = model._table_obj
    return sa.select(table.c.id).where(compile_domain(model, domain))


def _compile_term(model: BaseModel, term: tuple) -> sa.ColumnElement[bool]:
    path, operator, value = term
    if term == TRUE_TERM or (path == 1 and operator == "=" and value == 1):
        return sa.true()
    if term == FALSE_TERM or (path == 0 and operator == "=" and value == 1):
        return sa.false()
    if not isinstance(path, str) or not all(path.split(".")):
        raise DomainError(f"Invalid field path {path!r} in domain term {term!r}.")
    if not isinstance(operator, str):
        raise DomainError(f"Invalid operator {operator!r} in domain term {term!r}.")
    operator = "!=" if operator == "<>" else operator.lower()
    if operator not in TERM_OPERATORS:
        raise DomainError(
            f"Unknown operator {operator!r} in domain term {term!r}; use one of "
            f"{', '.join(sorted(TERM_OPERATORS))}."
        )
    table = model._table_obj
    head, _, rest = path.partition(".")
    if head == "id" and not rest:
        return _compare(model, None, table.c.id, operator, value, term)
    field = model._fields.get(head)
    if field is None:
        raise DomainError(
            f"Unknown field '{head}' on model '{model._name}' in domain term {term!r}."
        )
    if field.related and not field.store:
        related_path = field.related + (f".{rest}" if rest else "")
        return _compile_term(model, (related_path, operator, value))
    if field.computed and not field.store:
        if not field.search:
            raise DomainError(
                f"Field '{head}' of '{model._name}' is computed and not stored, so it cannot "
                f"be searched (domain term {term!r}); give it store=True or a search method."
            )
        method = getattr(model, field.search)
        return compile_domain(model, method(operator, value))
    comodel = model.env(su=True)[field.comodel_name] if field.relational else None
    if rest:
        if comodel is None:
            raise DomainError(
                f"Field '{head}' of '{model._name}' is not relational, so the path '{path}' "
                f"in domain term {term!r} cannot be followed."
            )
        return _relational_in(model, field, subquery_ids(comodel, [(rest, operator, value)]))
    if field.type in ("one2many", "many2many"):
        return _compile_x2many(model, field, comodel, operator, value, term)
    if field.type == "secret":
        raise DomainError(f"Field '{head}' of '{model._name}' is a secret and cannot be searched.")
    if field.type == "many2one" and isinstance(value, str) and "like" in operator:
        rec_name = comodel._rec_name_field()
        return _relational_in(model, field, subquery_ids(comodel, [(rec_name, operator, value)]))
    return _compare(model, field, table.c[field.name], operator, value, term)


def _relational_in(model: BaseModel, field, co_ids: sa.Select) -> sa.ColumnElement[bool]:
    """Records of ``model`` whose relational ``field`` reaches one of ``co_ids``."""
    table = model._table_obj
    if field.type == "many2one":
        return table.c[field.name].in_(co_ids)
    if field.type == "one2many":
        co_table = model.env[field.comodel_name]._table_obj
        inverse = co_table.c[field.inverse_name]
        return table.c.id.in_(sa.select(inverse).where(co_table.c.id.in_(co_ids)))
    rel = model.pool.relation_tables[field.relation]
    return table.c.id.in_(sa.select(rel.c[field.column1]).where(rel.c[field.column2].in_(co_ids)))


def _compile_x2many(model, field, comodel, operator, value, term) -> sa.ColumnElement[bool]:
    if value is False or value is None:
        if operator not in ("=", "!="):
            raise DomainError(f"Domain term {term!r}: compare an x2many with False using = or !=.")
        linked = _relational_in(model, field, sa.select(comodel._table_obj.c.id))
        return sa.not_(linked) if operator == "=" else linked
    ids = _ids_of(value, term)
    co_table = comodel._table_obj
    co_ids = sa.select(co_table.c.id).where(co_table.c.id.in_(ids))
    if operator in ("=", "in"):
        return _relational_in(model, field, co_ids)
    if operator in ("!=", "not in"):
        return sa.not_(_relational_in(model, field, co_ids))
    raise DomainError(
        f"Domain term {term!r}: x2many fields take =, !=, in or not in with record ids."
    )


def _ids_of(value: Any, term: tuple) -> list[int]:
    if hasattr(value, "_ids"):
        return list(value._ids)
    values = [value] if isinstance(value, int) else value
    if isinstance(values, list | tuple | set | frozenset) and all(_is_integer(v) for v in values):
        return [_in_range(v, term) for v in values]
    raise DomainError(f"Domain term {term!r}: expected record ids, got {value!r}.")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: int, term: tuple) -> int:
    low, high = INTEGER_RANGE
    if not low <= value <= high:
        raise DomainError(
            f"Domain term {term!r}: {value} is out of range for an integer column "
            f"({low} to {high})."
        )
    return value


def _param(field, value: Any, term: tuple) -> Any:
    """A non-empty value as the database parameter for comparing with ``field``."""
    if field is None or field.type == "many2one":
        if hasattr(value, "_ids"):
            if len(value._ids) != 1:
                raise DomainError(f"Domain term {term!r}: compare with one record at a time.")
            return value._ids[0]
        if _is_integer(value):
            return _in_range(value, term)
        raise DomainError(f"Domain term {term!r}: expected a record id, got {value!r}.")
    if field.type in TEXT_TYPES:
        return _text(value, term)
    if field.type in ("date", "datetime"):
        try:
            return field.convert_to_column(field._convert(value))
        except Exception:
            raise DomainError(
                f"Domain term {term!r}: {value!r} is not a valid {field.type}."
            ) from None
    if field.type == "boolean":
        return bool(value)
    if field.type in ("integer", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise DomainError(f"Domain term {term!r}: expected a number, got {value!r}.")
        if field.type == "integer" and isinstance(value, int):
            return _in_range(value, term)
        try:
            return float(value)
        except OverflowError:
            raise DomainError(f"Domain term {term!r}: {value} is too large a number.") from None
    return value


def _text(value: Any, term: tuple) -> str:
    if not isinstance(value, str):
        raise DomainError(f"Domain term {term!r}: expected a string, got {value!r}.")
    problem = text_problem(value)
    if problem:
        raise DomainError(f"Domain term {term!r}: the string holds {problem}.")
    return value


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _boolean_in(column, operator: str, value: Any, term: tuple) -> sa.ColumnElement[bool]:
    """``in``/``not in`` on a boolean: False is a value like True, and unset counts as False
    (as with ``=``)."""
    if not isinstance(value, list | tuple | set | frozenset):
        raise DomainError(f"Domain term {term!r}: '{operator}' takes a list of values.")
    wanted = {bool(v) for v in value}
    if operator == "not in":
        wanted = {True, False} - wanted
    clauses = [column.is_(True)] if True in wanted else []
    if False in wanted:
        clauses.append(sa.not_(sa.func.coalesce(column, False)))
    return sa.or_(*clauses) if clauses else sa.false()


def _compare(model, field, column, operator, value, term) -> sa.ColumnElement[bool]:
    empty = value is False or value is None
    is_bool = field is not None and field.type == "boolean"
    kind = "integer" if field is None else field.type
    subject = "the id" if field is None else f"field '{field.name}'"
    if kind in SET_OR_NOT_TYPES and not (operator in ("=", "!=") and empty):
        raise DomainError(
            f"Domain term {term!r}: field '{field.name}' holds {kind} data; it can only be "
            "compared with False (= False: not set, != False: set)."
        )
    if is_bool and operator not in ("=", "!=", "in", "not in"):
        raise DomainError(
            f"Domain term {term!r}: field '{field.name}' is a boolean; use =, !=, in or not in."
        )
    if "like" in operator and kind not in TEXT_TYPES:
        raise DomainError(
            f"Domain term {term!r}: '{operator}' compares text, and {subject} is {kind}."
        )
    if is_bool and operator in ("in", "not in"):
        return _boolean_in(column, operator, value, term)
    if operator in ("in", "not in"):
        if hasattr(value, "_ids"):
            value = list(value._ids)
        if not isinstance(value, list | tuple | set | frozenset):
            raise DomainError(f"Domain term {term!r}: '{operator}' takes a list of values.")
        values = [_param(field, v, term) for v in value if v is not False and v is not None]
        with_null = len(values) != len(value)
        if operator == "in":
            clause = column.in_(values) if values else sa.false()
            return sa.or_(clause, column.is_(None)) if with_null else clause
        clause = column.not_in(values) if values else sa.true()
        return (
            sa.and_(clause, column.is_not(None)) if with_null else sa.or_(clause, column.is_(None))
        )
    if operator in ("=", "!=") and empty:
        if is_bool:
            unset = sa.or_(column.is_(None), column.is_(False))
            return unset if operator == "=" else sa.not_(unset)
        return column.is_(None) if operator == "=" else column.is_not(None)
    if empty:
        raise DomainError(f"Domain term {term!r}: cannot use '{operator}' with an empty value.")
    if "like" in operator:
        if not isinstance(value, str):
            raise DomainError(f"Domain term {term!r}: '{operator}' takes a string.")
        _text(value, term)
        pattern = value if operator.startswith("=") else f"%{_escape_like(value)}%"
        escape = None if operator.startswith("=") else "\\"
        matcher = column.ilike if "ilike" in operator else column.like
        clause = matcher(pattern, escape=escape)
        return sa.or_(sa.not_(clause), column.is_(None)) if operator.startswith("not") else clause
    param = _param(field, value, term)
    if is_bool and operator in ("=", "!="):
        operator = "=" if param == (operator == "=") else "!="
        truthy = column.is_(True)
        return truthy if operator == "=" else sa.not_(sa.func.coalesce(column, False))
    if operator == "=":
        return column == param
    if operator == "!=":
        return sa.or_(column != param, column.is_(None))
    return {
        "<": column < param,
        "<=": column <= param,
        ">": column > param,
        ">=": column >= param,
    }[operator]
