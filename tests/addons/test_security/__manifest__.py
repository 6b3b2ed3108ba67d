{
    "name": "Security test models",
    "version": "1.0",
    "summary": "Notes owned by users, for access right and record rule tests",
}
