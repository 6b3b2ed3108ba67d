"""Two services added by an addon: ``echo`` (chat, models, message formatting) repeats the
last message word by word; ``half`` is only declared, so dispatching to it fails."""

from addons.llm_thread.wire.events import Finish, TextDelta, Usage
from core import fields, models


class EchoProvider(models.Model):
    _inherit = "llm.provider"

    service = fields.Selection(selection_add=[("echo", "Echo"), ("half", "Half-implemented")])

    def echo_chat(self, messages, model=None, http_client=None, **options):
        last = messages[-1]["content"]
        if "BOOM" in last:
            raise RuntimeError("the echo service broke")
        words = last.split()
        for word in words:
            yield TextDelta(word + " ")
        yield Usage(len(messages), len(words))
        # Read lazily, as a generator: through the read-only cursor chat() was called on.
        yield Finish("stop", {"provider": self.name, "model": model, **options})

    def echo_format_messages(self, messages):
        return [{"role": m["role"], "content": m["content"].upper()} for m in messages]

    def echo_models(self):
        return [
            {"name": "echo-1", "model_use": "chat"},
            {"name": "echo-embed", "model_use": "embedding"},
        ]
