{
    "name": "ORM benchmark model",
    "version": "1.0",
    "summary": "A plain model, so recordsets and raw Core do the same work in bench/orm.py",
}
