{
    "name": "ORM test models",
    "version": "1.0",
    "summary": "Models exercising every field type, for the core test suite",
}
