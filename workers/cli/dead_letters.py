"""`oceanstream dead-letters list|replay|purge`: the messages workers moved aside.

The lists and their records are `workers.services.dead_letters`'s; this module only parses
options and prints. Payloads, reasons and queue names come from the broker: they are
printed escaped, never read as markup.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from workers.cli.app import EXIT_FAILED, EXIT_USAGE, app, err, load_settings, out, plural

dead_letters_app = typer.Typer(
    help="Messages no worker could read, kept per queue: list, replay, purge.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(dead_letters_app, name="dead-letters")

_QUEUE_HELP = "A queue: ingest, faces, flow or inference."


def _broker() -> tuple[Any, Any]:
    """(settings, redis client) of the configured broker; a usage error if it is not Redis."""
    from workers.broker.kombu_redis import UnsupportedBrokerSetting
    from workers.services.dead_letters import broker_client

    settings = load_settings()
    try:
        return settings, broker_client(settings)
    except UnsupportedBrokerSetting as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def _run(settings: Any, call: Any) -> Any:
    """`call()`, with a broker outage or a usage error as one line and its exit code."""
    from workers.cli.failures import describe_failure, exit_code_for

    try:
        return call()
    except Exception as exc:
        message = describe_failure(exc, settings)
        if message is None:
            raise
        err.print(f"error: {message}", markup=False, highlight=False)
        raise typer.Exit(exit_code_for(exc)) from None


def _queues(queue: str | None) -> list[str]:
    from workers.celery_app import QUEUES
    from workers.services.dead_letters import check_queue

    return list(QUEUES) if queue is None else [check_queue(queue, QUEUES)]


@dead_letters_app.command("list")
def list_dead_letters(
    queue: str | None = typer.Option(None, "--queue", "-q", help=_QUEUE_HELP),
    limit: int = typer.Option(20, "--limit", min=1, help="Entries shown per queue, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (full payloads)."),
) -> None:
    """How many dead letters each queue holds, and the newest of them."""
    from workers.services.dead_letters import counts, entries

    settings, client = _broker()

    def read() -> tuple[dict[str, int], dict[str, list[Any]]]:
        names = _queues(queue)
        held = counts(client, names)
        return held, {q: entries(client, q, limit) for q in names if held[q]}

    held, found = _run(settings, read)
    if as_json:
        report = {
            q: {"count": n, "entries": [e.to_json() if e else None for e in found.get(q, [])]}
            for q, n in held.items()
        }
        out.print_json(json.dumps(report))
        return
    out.print(
        "  ".join(f"{escape(q)}: {n}" for q, n in held.items()), highlight=False, markup=False
    )
    for name, items in found.items():
        table = Table("time", "reason", "payload", title=f"{escape(name)} (newest first)")
        for item in items:
            if item is None:
                table.add_row("-", "unreadable record", "")
            else:
                table.add_row(escape(item.time), escape(item.reason), escape(item.preview()))
        out.print(table)


@dead_letters_app.command("replay")
def replay_dead_letters(
    queue: str = typer.Option(..., "--queue", "-q", help=_QUEUE_HELP),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Oldest N only (default all)."),
) -> None:
    """Push dead letters back onto the queue they came from, oldest first."""
    from workers.services.dead_letters import producer_list, replay

    settings, client = _broker()

    def run() -> Any:
        (name,) = _queues(queue)
        return replay(client, name, producer_list(name), limit)

    done = _run(settings, run)
    dropped = []
    if done.unreadable:
        dropped.append(plural(done.unreadable, "unreadable record"))
    if done.truncated:
        dropped.append(f"{plural(done.truncated, 'payload')} too large to replay (kept cut short)")
    note = f" ({', '.join(dropped)} removed)" if dropped else ""
    out.print(
        f"replayed {plural(done.replayed, 'message')} onto {queue}{note}",
        markup=False,
        highlight=False,
    )
    if done.unreadable:
        raise typer.Exit(EXIT_FAILED)


@dead_letters_app.command("purge")
def purge_dead_letters(
    queue: str = typer.Option(..., "--queue", "-q", help=_QUEUE_HELP),
) -> None:
    """Delete a queue's dead letters."""
    from workers.services.dead_letters import purge

    settings, client = _broker()

    def run() -> int:
        (name,) = _queues(queue)
        return purge(client, name)

    removed = _run(settings, run)
    out.print(f"purged {plural(removed, 'dead letter')} of {queue}", markup=False, highlight=False)
