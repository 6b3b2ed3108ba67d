from . import (  # noqa: F401
    llm_budget,
    llm_generation_batch,
    llm_generation_job,
    llm_generation_job_attempt,
    llm_generation_job_chunk,
    llm_generation_metric,
    llm_generation_queue,
    llm_generation_usage,
    llm_generation_worker,
    llm_model,
    llm_provider,
    llm_thread,
)
