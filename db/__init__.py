"""OceanStream's database layer: typed models, engine and session factories, repository
functions and Alembic migrations.

Importing this package creates no engine and opens no connection; build them with
`db.engine.make_engine` and `db.engine.make_session_factory`.
"""
