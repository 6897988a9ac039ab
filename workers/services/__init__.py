"""Application steps shared by the CLI (and any other front end): no typer, no rich.

Each function takes the settings or a session factory, calls `core` and `db`, and returns
plain values or raises errors with a message meant for the user; printing is the caller's.
"""
