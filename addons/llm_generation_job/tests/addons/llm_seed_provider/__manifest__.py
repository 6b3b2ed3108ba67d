{
    "name": "Seed provider example",
    "version": "1.0",
    "summary": "The provider implementation example of the generation-job contract, as written",
    "depends": ["llm_generation_job"],
}
