{
    "name": "LLM Thread",
    "version": "0.1",
    "summary": "LLM providers, models, conversation threads and messages; direct streaming",
    "depends": ["base"],
}
