{
    "name": "Base",
    "version": "0.1",
    "summary": "Users, groups, access rights and record rules, scheduled actions",
    "depends": [],
}
