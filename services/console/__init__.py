"""The web console: server-rendered pages for CS Ops (and, with engagements, pooled
CSMs) under ``/console``, drawn from the same services and repositories as the API,
through each service's door (``services.<service>.interface``). Its own door is
:mod:`services.console.interface` (the app mounts it, the CLI mints sign-in links)."""
