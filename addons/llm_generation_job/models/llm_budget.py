"""Budgets: what a user, a provider or everyone may spend on generations per day or month.

A budget's spend in its period is the cost in the usage ledger since the period began (UTC),
plus what the jobs running in its scope are expected to cost (their reservations, until
their attempts end and the ledger has the real figure). Past the soft threshold the job
store warns (the log, the diagnostics); a job that would take the spend past the hard limit
is refused at enqueue with an error naming the budget, its period and when it resets, and
one queued before the limit was reached waits at claim until then. Managers maintain
budgets; users read the ones that apply to them.
"""

from __future__ import annotations

import datetime as dt

from core import ValidationError, api, fields, models

SCOPES = [("user", "A user"), ("provider", "A provider"), ("all", "Everyone")]
PERIODS = [("day", "Day"), ("month", "Month")]


class LLMBudget(models.Model):
    _name = "llm.budget"
    _description = "LLM spending budget"
    _order = "id"

    name = fields.Char(required=True)
    scope = fields.Selection(SCOPES, required=True, default="user")
    user_id = fields.Many2one("res.users", ondelete="cascade", index=True)
    provider_id = fields.Many2one("llm.provider", ondelete="cascade", index=True)
    period = fields.Selection(PERIODS, required=True, default="month")
    soft_limit = fields.Float(help="USD: past this, a warning")
    hard_limit = fields.Float(help="USD: past this, new jobs are refused (empty: no limit)")
    active = fields.Boolean(default=True)
    soft_warned_at = fields.Datetime(help="When its soft threshold was last reported")

    @api.constrains("scope", "user_id", "provider_id", "soft_limit", "hard_limit")
    def _check_scope(self):
        for budget in self:
            if budget.scope == "user" and not budget.user_id:
                raise ValidationError(f"Budget '{budget.name}' is a user's: set its user_id.")
            if budget.scope == "provider" and not budget.provider_id:
                raise ValidationError(
                    f"Budget '{budget.name}' is a provider's: set its provider_id."
                )
            if budget.soft_limit < 0 or budget.hard_limit < 0:
                raise ValidationError(f"Budget '{budget.name}': limits cannot be negative.")
            if budget.soft_limit and budget.hard_limit and budget.soft_limit > budget.hard_limit:
                raise ValidationError(
                    f"Budget '{budget.name}': its soft threshold ({budget.soft_limit:g}) is above "
                    f"its hard limit ({budget.hard_limit:g})."
                )

    # -- periods ---------------------------------------------------------------------------
    def _period_start(self, now: dt.datetime) -> dt.datetime:
        self.ensure_one()
        day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return day if self.period == "day" else day.replace(day=1)

    def _resets_at(self, now: dt.datetime) -> dt.datetime:
        start = self._period_start(now)
        if self.period == "day":
            return start + dt.timedelta(days=1)
        return (start + dt.timedelta(days=32)).replace(day=1)

    # -- what applies, and what is spent ---------------------------------------------------
    @api.model
    def _applying(self, user_id: int, provider_id: int):
        """The active budgets a job of ``user_id`` on ``provider_id`` counts against."""
        return self.sudo().search(
            [
                ("active", "=", True),
                "|",
                "|",
                ("scope", "=", "all"),
                "&",
                ("scope", "=", "user"),
                ("user_id", "=", user_id),
                "&",
                ("scope", "=", "provider"),
                ("provider_id", "=", provider_id),
            ]
        )

    def _scope_domain(self) -> list:
        self.ensure_one()
        if self.scope == "user":
            return [("user_id", "=", self.user_id.id)]
        if self.scope == "provider":
            return [("provider_id", "=", self.provider_id.id)]
        return []

    def _spent(self, now: dt.datetime) -> float:
        """The ledger's cost in the budget's scope since its period began."""
        groups = (
            self.env["llm.generation.usage"]
            .sudo()
            .read_group(
                [*self._scope_domain(), ("ended_at", ">=", self._period_start(now))],
                [],
                ["cost:sum"],
            )
        )
        return (groups[0]["cost:sum"] if groups else 0.0) or 0.0

    def _describe(self) -> str:
        self.ensure_one()
        whose = {
            "user": f"of user {self.user_id.login}",
            "provider": f"of provider '{self.provider_id.name}'",
            "all": "of everyone",
        }[self.scope]
        return f"budget '{self.name}' ({whose}, per {self.period})"
