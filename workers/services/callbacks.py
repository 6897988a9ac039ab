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

Lost messages. A send that fails (the broker down) puts the job back to `waiting`, and the
next sweep tries again. A message lost after it was sent (the broker restarted without its
data, a worker gone with a retry it held) is sent again by the reconciler
(`resend_lost`): a `queued` job with no message on the broker and nothing recorded for it
for a while. A resent message continues the attempt count from the recorded attempts.

Addresses. Unless `OCEANSTREAM_CALLBACK_ALLOW_PRIVATE` is set, a callback URL whose host
resolves to a loopback, private, link-local or otherwise non-public address is refused: when
the job is made (the API answers 422) and again before each attempt (the name may resolve
differently by then), where it is recorded as the attempt's error and the callback gives up.

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
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from db.repository.jobs import (
    count_callback_attempts,
    get_job,
    idle_queued_callbacks,
    jobs_due_for_callback,
    move_callback,
    record_callback_attempt,
)
from db.types import utcnow
from workers.services.progress import job_progress
from workers.services.results import job_results
from workers.services.tenants import webhook_secret

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
    with session_factory() as session:
        due = jobs_due_for_callback(session=session)
    sent = 0
    for job_id in due:
        with session_factory.begin() as session:
            if not move_callback(
                session=session, job_id=job_id, to_state="queued", from_state="waiting"
            ):
                continue  # another process took it
        try:
            celery.send_task(TASK, args=[job_id], queue=QUEUE)
        except Exception:
            # Not sent: back to waiting, so the next sweep sends it (if this fails too, the
            # reconciler finds the job queued with no message and resends it).
            with session_factory.begin() as session:
                move_callback(
                    session=session, job_id=job_id, to_state="waiting", from_state="queued"
                )
            raise
        sent += 1
    return sent


def resend_lost(
    session_factory: sessionmaker,
    celery: Celery,
    *,
    idle_s: float,
    on_broker: Collection[str] | None,
) -> int:
    """Send again the callback of every `queued` job whose message is gone; how many.

    `on_broker`: the job ids with a callback message on the broker now (waiting, or held by
    a worker: a retry waiting out its backoff); None when the broker cannot be read, and
    then only jobs idle longer than the longest backoff and an attempt are resent.
    A job is idle when no attempt was recorded and none of its videos changed for `idle_s`
    seconds.
    """
    from datetime import timedelta

    if on_broker is None:
        idle_s += MAX_BACKOFF_S + 60.0
    with session_factory() as session:
        idle = idle_queued_callbacks(session=session, before=utcnow() - timedelta(seconds=idle_s))
    lost = [job_id for job_id in idle if on_broker is None or job_id not in on_broker]
    for job_id in lost:
        celery.send_task(TASK, args=[job_id], queue=QUEUE)
    if lost:
        log.warning("resent the lost callback message of %d job(s)", len(lost))
    return len(lost)


def address_problem(url: str, allow_private: bool) -> str | None:
    """Why a callback may not go to `url`: not http(s), no host, a host that does not
    resolve, or (unless `allow_private`) one that resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the callback URL must be an http or https URL with a host"
    if allow_private:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"the callback host {parts.hostname} does not resolve ({exc})"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            return (
                f"the callback host {parts.hostname} resolves to a non-public address "
                f"({address}); set OCEANSTREAM_CALLBACK_ALLOW_PRIVATE=1 to allow it"
            )
    return None


def job_summary(session_factory: sessionmaker, job_id: str) -> dict[str, Any] | None:
    """The JSON a callback carries: the job, its counts and its results; None if erased."""
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


#: What one attempt came to: a 2xx answer; a failure worth retrying; an address refused
#: (retrying cannot help); the job erased meanwhile (nothing to send).
Outcome = Literal["delivered", "failed", "refused", "erased"]


def deliver(
    settings: Settings, session_factory: sessionmaker, job_id: str, attempt: int
) -> Outcome:
    """POST the job's summary once and record the attempt."""
    import httpx

    with session_factory() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None or not job.callback_url:
            return "erased"
        url, tenant_id = job.callback_url, job.tenant_id
    refused = address_problem(url, settings.callback_allow_private)
    if refused is not None:
        _record(session_factory, job_id, attempt, None, refused)
        return "refused"
    summary = job_summary(session_factory, job_id)
    if summary is None:
        return "erased"
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
    _record(session_factory, job_id, attempt, status_code, error)
    return "delivered" if error is None else "failed"


def _record(
    session_factory: sessionmaker,
    job_id: str,
    attempt: int,
    status_code: int | None,
    error: str | None,
) -> None:
    with session_factory.begin() as session:
        if get_job(session=session, job_id=job_id) is not None:
            record_callback_attempt(
                session=session,
                job_id=job_id,
                attempt=attempt,
                status_code=status_code,
                error=error,
            )


def finish(session_factory: sessionmaker, job_id: str, delivered: bool) -> None:
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
        with session_factory() as session:
            job = get_job(session=session, job_id=job_id)
            if job is None or job.callback_state != "queued":
                return  # erased, or a duplicate message of a callback already ended
            # Counted from the recorded attempts: a message the reconciler sent again after
            # a lost one continues the count.
            attempt = count_callback_attempts(session=session, job_id=job_id) + 1
        if attempt > max_attempts:
            finish(session_factory, job_id, False)
            return
        outcome = deliver(settings, session_factory, job_id, attempt)
        if outcome == "erased":
            return
        delivered = outcome == "delivered"
        if outcome != "failed" or attempt >= max_attempts:
            finish(session_factory, job_id, delivered)
            if outcome == "refused":
                log.warning("callback of job %s refused: its URL's address is not public", job_id)
            elif not delivered:
                log.warning("callback of job %s gave up after %d attempts", job_id, attempt)
            return
        raise self.retry(countdown=backoff_s(settings, attempt))
