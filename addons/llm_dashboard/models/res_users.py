"""LLM managers manage the system: they see the manager pages and forms."""

from core import models

MANAGER_GROUP = "llm_thread.group_llm_manager"


class Users(models.Model):
    _inherit = "res.users"

    def is_manager(self) -> bool:
        return super().is_manager() or self.has_group(MANAGER_GROUP)
