from . import llm_provider, llm_model, llm_thread, llm_message  # noqa: F401, I001
