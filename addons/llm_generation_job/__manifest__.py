{
    "name": "LLM Generation Jobs",
    "version": "0.1",
    "summary": "Durable generation jobs on per-provider queues, run by workers",
    "depends": ["llm_thread"],
}
