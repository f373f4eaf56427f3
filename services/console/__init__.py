"""The web console: server-rendered pages for CS Ops (and, with engagements, pooled
CSMs) under ``/console``, drawn from the same services and repositories as the API."""
