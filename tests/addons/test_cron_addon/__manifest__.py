{
    "name": "Cron test models",
    "version": "1.0",
    "summary": "A model whose methods record cron ticks, or fail",
}
