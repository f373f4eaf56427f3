"""The wiring: where Touchline's services are assembled into runnable things. Nothing
here holds domain logic; each module only connects the services' published parts.

- ``app.py``: the FastAPI app factory (every service's router, health, metrics);
- ``cli.py``: the ``touchline`` command, and ``database()``, the one session scope its
  commands share;
- ``workers.py``: the registry of workers ``touchline worker <name>`` and ``touchline run`` start;
- ``supervisor.py``: the ``touchline run`` process supervisor (restarts, drain, stop order);
- ``models.py``: every service's tables in one metadata, for Alembic and the tests.
"""
