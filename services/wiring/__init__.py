"""The wiring: where Touchline's services are assembled into runnable things. Nothing
here holds domain logic; each module only connects the services' published parts: their
``interface`` modules (import-linter checks it), and the worker classes ``workers.py``
names by path.

- ``app.py``: the FastAPI app factory (every service's ``routers()``, the console's
  ``mount``, health, metrics);
- ``cli.py``: the ``touchline`` command; its commands and the demo share one session
  scope, ``shared.db.database()``;
- ``workers.py``: the registry of workers ``touchline worker <name>`` and ``touchline run`` start;
- ``supervisor.py``: the ``touchline run`` process supervisor (restarts, drain, stop order);
- ``models.py``: every service's tables in one metadata, for Alembic and the tests.
"""
