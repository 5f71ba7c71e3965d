"""Scheduled syncs: ``syncx schedule serve`` and its commands.

Modules: :mod:`~sync.schedule.timing` (cron / ``every`` fire times in a time zone, Debian cron's
daylight-saving rule), :mod:`~sync.schedule.store` (the run history in SQLite or PostgreSQL, with
row leases), :mod:`~sync.schedule.scheduler` (the serve loop: one child ``syncx run`` per fire),
:mod:`~sync.schedule.web` (the status page and ``/metrics``), :mod:`~sync.schedule.notify`.
Nothing here imports a connector: a run is a child process.
"""
