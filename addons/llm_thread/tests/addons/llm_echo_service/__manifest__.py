{
    "name": "Echo service (test)",
    "version": "1.0",
    "summary": "A provider service added the odoo-llm way: selection_add and <service>_ methods",
    "depends": ["llm_thread"],
}
