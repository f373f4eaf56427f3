"""ingest: validates product events and keeps account, user and usage state.

Its one door for the other services, the console, the demo and the CLI is
:mod:`services.ingest.interface` (the read model, two commands, and routers() for the app); every query ingest
runs is in :mod:`services.ingest.repository`. The rest is private to ingest: the
models, the write path (:mod:`.service`), the accounts and events API routers and the
ingest worker (:mod:`.events.worker`)."""
