"""Celery's worker consumer and task request, made to dead-letter what they refuse.

A worker survives any message. What kombu cannot decode is dead-lettered by its transport
(`workers.broker.kombu_redis.DeadLetteringTransport`); what Celery's consumer refuses after
that (a body that does not decode, no task name, a task not registered or not the project's,
such as Celery's built-in `celery.accumulate`, arguments the task does not take) is
dead-lettered by `DeadLetteringConsumer` and `CheckedRequest` before any pool process sees
it: one log line with the queue and the reason, then the next message. Both override Celery
hooks by name; tests/contracts/test_kombu_dead_letters.py checks those names still exist.
"""

from __future__ import annotations

import inspect
import logging
from functools import cache
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from workers.broker.kombu_redis import dead_letter_message

log = logging.getLogger("oceanstream.worker")

#: Annotations of task parameters that are checked before a task runs.
_CHECKED_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
}


#: The longest text argument a task accepts: ids and storage URIs are far shorter, and a
#: larger one would be copied into log lines and task events whole.
MAX_ARGUMENT_CHARS = 4096
#: Characters of a message's `argsrepr`/`kwargsrepr` kept (what logs and task events show).
MAX_ARGSREPR_CHARS = 1024


@cache
def _signature(task: Task) -> inspect.Signature:
    return inspect.signature(task.run)


def argument_problem(task: Task, args: Any, kwargs: Any) -> str | None:
    """Why `task` cannot be called with `args` and `kwargs`; None when it can.

    The count and names must fit the task's signature, and a parameter annotated with a
    plain type (`video_id: str`) must get a value of it: a wrong message would otherwise
    fail inside the task with a TypeError, after a pool process took it.
    """
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        got = f"{type(args).__name__} and {type(kwargs).__name__}"
        return f"args must be a list and kwargs an object, got {got}"
    signature = _signature(task)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        return f"arguments do not fit {task.name}: {exc}"
    for name, value in bound.arguments.items():
        if isinstance(value, str) and len(value) > MAX_ARGUMENT_CHARS:
            return (
                f"{task.name} takes {name} of at most {MAX_ARGUMENT_CHARS} characters, "
                f"got {len(value)}"
            )
        annotation = signature.parameters[name].annotation
        type_name = (
            annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        )
        expected = _CHECKED_TYPES.get(type_name)
        if expected is None:
            continue
        if not isinstance(value, expected) or (type_name != "bool" and isinstance(value, bool)):
            return f"{task.name} takes {name}: {type_name}, got {type(value).__name__}"
    return None


#: The queues run the project's tasks only: Celery's built-ins (`celery.accumulate`,
#: `celery.chord_unlock`, ...) are registered on every app but never sent by the pipeline.
PROJECT_TASK_PREFIX = "oceanstream."


class CheckedRequest(Request):
    """Celery's request, refusing (InvalidTaskError) a message no task run could accept:
    a task not the project's, or arguments the task does not take.

    Raised in the worker's consumer, before the pool: Celery calls
    `DeadLetteringConsumer.on_invalid_task`, which dead-letters the message.
    """

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(message, *args, **kwargs)
            # Set by the sender: shown in logs and task events, so capped whatever it says.
            self._argsrepr = _capped(self.argsrepr)
            self._kwargsrepr = _capped(self.kwargsrepr)
            problem = (
                argument_problem(self.task, self.args, self.kwargs)
                if self.task.name.startswith(PROJECT_TASK_PREFIX)
                else f"{self.task.name} is not one of the pipeline's tasks"
            )
        except (KeyError, ValueError, TypeError) as exc:  # a body that is not [args, kwargs, embed]
            problem = f"not a Celery task message: {type(exc).__name__}: {exc}"
        if problem is not None:
            raise InvalidTaskError(problem)


def _capped(text: Any) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= MAX_ARGSREPR_CHARS else text[: MAX_ARGSREPR_CHARS - 1] + "…"


class CheckedTask(Task):
    """The app's task base class: its requests are `CheckedRequest`s."""

    Request = f"{__name__}:CheckedRequest"


class DeadLetteringConsumer(Consumer):
    """Celery's worker consumer, dead-lettering what it refuses instead of only logging it.

    Each refused message is logged once (by `dead_letter`), moved to its queue's
    dead-letter list, and settled (acknowledged or rejected, as Celery does) so it is not
    delivered again; the worker goes on with the next message.
    """

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter_message(message, f"cannot decode the message body: {exc}")
        message.ack()

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter_message(message, "not a Celery task message (no task name)")
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        dead_letter_message(message, f"no task {headers.get('task')!r} is registered")
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter_message(message, f"invalid task message: {exc}")
        message.reject_log_error(log, self.connection_errors)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler, with any error a message causes in it dead-lettering the message."""
        handler = super().create_task_handler(*args, **kwargs)
        recoverable = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message: Any) -> Any:
            try:
                return handler(message)
            except recoverable:
                raise
            except Exception as exc:
                dead_letter_message(message, f"refused by the worker: {type(exc).__name__}: {exc}")
                if not message.acknowledged:
                    message.reject_log_error(log, self.connection_errors)
                return None

        return on_task_received
