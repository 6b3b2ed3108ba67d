"""Models a provider serves; one default per provider and use."""

from core import api, fields, models

MODEL_USES = [
    ("chat", "Chat"),
    ("completion", "Completion"),
    ("embedding", "Embedding"),
    ("multimodal", "Multimodal"),
    ("image_generation", "Image generation"),
]


class LLMModel(models.Model):
    _name = "llm.model"
    _description = "LLM model"
    _order = "provider_id, name"
    _sql_constraints = [
        ("name_provider_unique", "unique(provider_id, name)", "The provider has this model."),
    ]

    name = fields.Char(required=True)
    provider_id = fields.Many2one("llm.provider", required=True, ondelete="cascade", index=True)
    model_use = fields.Selection(MODEL_USES, default="chat", required=True)
    default = fields.Boolean(help="The model used when none is named, per provider and use")
    active = fields.Boolean(default=True)

    @api.model_create_multi
    def create(self, vals_list):
        records = super().create(vals_list)
        records.filtered("default")._unset_other_defaults()
        return records

    def write(self, vals):
        result = super().write(vals)
        if vals.get("default") or {"provider_id", "model_use"} & set(vals):
            self.filtered("default")._unset_other_defaults()
        return result

    def _unset_other_defaults(self):
        for model in self:
            others = self.search(
                [
                    ("provider_id", "=", model.provider_id.id),
                    ("model_use", "=", model.model_use),
                    ("default", "=", True),
                    ("id", "!=", model.id),
                ]
            )
            if others:
                others.write({"default": False})
