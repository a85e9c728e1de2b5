"""The one way to queue work for the worker: `enqueue(func, *args)`.

It takes the function itself (not a dotted string, so a rename is caught at import), names
the task after it, and queues it with the current transaction:

- on django-q2's database broker the queue row is written inside the transaction, so it
  commits with the data the task needs or not at all (never a stored delivery without its
  task);
- on other brokers (Redis) it is sent once the transaction commits, so a worker never starts
  on data it cannot see yet; outside a transaction that is at once.

A broker error is logged with what was being queued and never raised into the request or
task that queued: every queued job has a sweeper that catches up (stuck deliveries, due
outbox rows, schedules). `on_error` lets a caller record the failure where staff see it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django_q.conf import Conf
from django_q.tasks import async_task

log = logging.getLogger(__name__)

#: django-q2's Task.name holds at most 100 characters.
NAME_LENGTH = 100


def task_path(func: Callable[..., Any]) -> str:
    """The dotted path the worker imports `func` by."""
    return f"{func.__module__}.{func.__qualname__}"


def enqueue(
    func: Callable[..., Any],
    *args: Any,
    name: str | None = None,
    group: str | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Run `func(*args)` on the worker (see the module's docstring for when it is sent)."""
    path = task_path(func)
    label = (name or f"{func.__name__}{args!r}")[:NAME_LENGTH]
    options: dict[str, Any] = {"task_name": label}
    if group:
        options["group"] = group

    def send() -> None:
        try:
            async_task(path, *args, **options)
        except Exception as error:
            log.exception("Could not queue %s%r", path, args)
            if on_error is not None:
                on_error(error)

    if Conf.ORM and not Conf.SYNC and connection.in_atomic_block:
        send()  # the queue row is part of this transaction
    else:
        transaction.on_commit(send, robust=True)
