"""`oceanstream db ...`"""

from __future__ import annotations

import typer

from workers.cli.app import db_app, err, load_settings


@db_app.command("upgrade")
def upgrade(
    revision: str = typer.Option("head", help="Alembic revision to upgrade to."),
) -> None:
    """Create or migrate the database schema."""
    from db.migrate import current_revision, upgrade_database
    from workers.bootstrap import prepare_home

    settings = load_settings()
    url = settings.effective_database_url
    prepare_home(settings)  # a SQLite file's folder and file, private to the user
    upgrade_database(url, revision=revision)
    err.print(f"database at revision {current_revision(url)}")
