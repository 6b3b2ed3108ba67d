"""Prices and rate limits per model, which managers maintain: what the usage ledger's costs
are made of, and the model's share of its provider's limits (admission.py)."""

from core import fields, models


class LLMModel(models.Model):
    _inherit = "llm.model"

    input_price = fields.Float(help="USD per million prompt tokens")
    cached_input_price = fields.Float(
        help="USD per million prompt tokens read from the provider's cache (empty: the input price)"
    )
    output_price = fields.Float(help="USD per million completion tokens")
    batch_discount = fields.Float(
        default=0.5, help="The share of the price paid for requests in provider batches"
    )
    rpm_limit = fields.Integer(help="Requests a minute to this model, for all workers")
    tpm_limit = fields.Integer(help="Tokens a minute of this model, for all workers")

    def _cost(self, prompt: int, completion: int, cached: int, batch: bool) -> tuple[float, bool]:
        """The cost in USD of that usage, and whether the model has prices."""
        self.ensure_one()
        if not (self.input_price or self.output_price):
            return 0.0, False
        cached = min(cached, prompt)
        cached_price = self.cached_input_price or self.input_price
        cost = (prompt - cached) * self.input_price + cached * cached_price
        cost = (cost + completion * self.output_price) / 1_000_000
        return cost * (self.batch_discount if batch else 1.0), True
