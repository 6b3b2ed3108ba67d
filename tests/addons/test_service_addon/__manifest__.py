{
    "name": "Service test addon",
    "version": "1.0",
    "summary": "A worker service that notes when it starts and stops",
}
