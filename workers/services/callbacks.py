"""Completion callbacks: when a job with a `callback_url` is final, POST its summary there.

Flow. A job made with a callback URL starts in callback state `waiting`. A sweep
(`dispatch_due`, run by every API process about once a second) finds waiting jobs whose
entries are all final, moves each to `queued` with one guarded UPDATE (so of several API
processes exactly one sends it) and sends `oceanstream.callback` with the job id to the
`callbacks` queue. The task (served by `oceanstream callback-worker`) POSTs the summary; a
2xx answer moves the job to `delivered`; anything else (another status, a timeout, a refused
connection) is recorded and retried after `callback_backoff_s`, doubling up to 10 minutes,
for `callback_max_attempts` attempts in all, then `gave_up`. Every attempt is a row in
`callback_attempts`. The job's own state is never touched: a callback cannot block or fail it.

Signature. The body is JSON; the request carries

    X-OceanStream-Timestamp: <unix seconds>
    X-OceanStream-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>

with the tenant's webhook secret. A receiver recomputes the HMAC over the timestamp, a dot
and the raw body, compares in constant time, and refuses a timestamp more than a few minutes
off its clock (a replay). `verify_signature` does exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

log = logging.getLogger("oceanstream.callbacks")

TIMESTAMP_HEADER = "X-OceanStream-Timestamp"
SIGNATURE_HEADER = "X-OceanStream-Signature"
EVENT_HEADER = "X-OceanStream-Event"
QUEUE = "callbacks"
TASK = "oceanstream.callback"
MAX_BACKOFF_S = 600.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex>`: HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a received callback is authentic and fresh (what a receiver should run)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, sent, body), signature_header.strip())


def backoff_s(settings: Settings, attempt: int) -> float:
    """Pause after failed attempt `attempt` (1-based)."""
    return float(min(settings.callback_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))


def dispatch_due(session_factory: sessionmaker, celery: Celery) -> int:
    """Queue the callback of every final job still waiting for it; how many were queued."""
    from db.repository.jobs import jobs_due_for_callback, move_callback

    with session_factory() as session:
        due = jobs_due_for_callback(session=session)
    sent = 0
    for job_id in due:
        with session_factory.begin() as session:
            if not move_callback(
                session=session, job_id=job_id, to_state="queued", from_state="waiting"
            ):
                continue  # another process took it
        celery.send_task(TASK, args=[job_id], queue=QUEUE)
        sent += 1
    return sent


def job_summary(session_factory: sessionmaker, job_id: str) -> dict[str, Any] | None:
    """The JSON a callback carries: the job, its counts and its results; None if erased."""
    from db.repository.jobs import get_job
    from workers.services.jobs import job_progress
    from workers.services.results import job_results

    with session_factory() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:
            return None
        created = job.created_at.isoformat()
    progress = job_progress(session_factory, job_id)
    return {
        "event": "job.final",
        "job": {
            "id": job_id,
            "created_at": created,
            "total": progress.total,
            "finished": progress.finished,
            "counts": {status.value: n for status, n in progress.counts.items()},
        },
        "results": [row.to_dict() for row in job_results(session_factory, job_id)],
    }


def deliver(
    settings: Settings, session_factory: sessionmaker, job_id: str, attempt: int
) -> bool | None:
    """POST the job's summary once and record the attempt: True on 2xx; None if erased."""
    import httpx

    from db.repository.jobs import get_job, record_callback_attempt
    from workers.services.tenants import webhook_secret

    with session_factory() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None or not job.callback_url:
            return None
        url, tenant_id = job.callback_url, job.tenant_id
    summary = job_summary(session_factory, job_id)
    if summary is None:
        return None
    body = json.dumps(summary, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "OceanStream-Callback/1",
        EVENT_HEADER: "job.final",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(webhook_secret(session_factory, tenant_id), timestamp, body),
    }
    status_code: int | None = None
    error: str | None = None
    try:
        response = httpx.post(
            url,
            content=body,
            headers=headers,
            timeout=settings.callback_timeout_s,
            follow_redirects=False,
        )
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"the receiver answered {status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    with session_factory.begin() as session:
        if get_job(session=session, job_id=job_id) is not None:
            record_callback_attempt(
                session=session,
                job_id=job_id,
                attempt=attempt,
                status_code=status_code,
                error=error,
            )
    return error is None


def finish(session_factory: sessionmaker, job_id: str, delivered: bool) -> None:
    from db.repository.jobs import move_callback

    with session_factory.begin() as session:
        move_callback(
            session=session,
            job_id=job_id,
            to_state="delivered" if delivered else "gave_up",
            from_state="queued",
        )


def register_callback_task(app: Celery, settings: Settings, session_factory: sessionmaker) -> None:
    """Register `oceanstream.callback` on `app` and declare its queue."""
    from kombu import Exchange, Queue

    app.conf.task_queues = [*app.conf.task_queues, Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)]
    max_attempts = settings.callback_max_attempts

    @app.task(name=TASK, bind=True, acks_late=True, max_retries=max_attempts - 1)
    def callback(self: Any, job_id: str) -> None:
        attempt = int(self.request.retries) + 1
        delivered = deliver(settings, session_factory, job_id, attempt)
        if delivered is None:
            return  # the job was erased meanwhile
        if delivered or attempt >= max_attempts:
            finish(session_factory, job_id, delivered)
            if not delivered:
                log.warning("callback of job %s gave up after %d attempts", job_id, attempt)
            return
        raise self.retry(countdown=backoff_s(settings, attempt))
