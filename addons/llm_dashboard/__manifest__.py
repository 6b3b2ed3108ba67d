{
    "name": "LLM Dashboard",
    "version": "0.1",
    "summary": "Operator pages: overview, jobs with their live replies, queues, providers",
    "depends": ["llm_generation_job"],
}
