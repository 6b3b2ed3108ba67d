# res_users first: its _register_hook creates the superuser, which every later record
# references as its creator (hooks run in model definition order).
from . import res_users, res_groups, ir_cron, res_users_apikey, res_users_session  # noqa: F401, I001
