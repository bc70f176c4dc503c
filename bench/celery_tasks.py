"""The Celery app of ``versus_celery.py``: one no-op task, broker and result backend on Redis.

It runs in the Celery virtualenv (``.bench-venv/celery``), not in the project's: the worker
loads it with ``celery -A celery_tasks worker`` and the load generator (``celery_load.py``)
imports it, both with this folder on ``PYTHONPATH``. It imports nothing but Celery.

The Redis URL comes from ``BENCH_CELERY_REDIS`` (set by ``celery_side.run_celery``). Everything
else is Celery's default configuration: JSON messages, results stored (``task_ignore_result``
off) for a day, early acknowledgement, a prefetch multiplier of 4.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-not-found]

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/0")

app = Celery("celery_tasks", broker=REDIS_URL, backend=REDIS_URL)
# Only silences the start-up deprecation warning of Celery 5: True is the behaviour anyway.
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.echo")  # type: ignore[untyped-decorator]
def echo(value: Any) -> Any:
    """The no-op work: the argument back, as the couchdb-events worker echoes its message id."""
    return value
