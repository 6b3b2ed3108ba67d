from . import cron_tick  # noqa: F401
