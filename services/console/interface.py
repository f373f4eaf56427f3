"""The console's one door: the only module of the console that the app and the CLI may
import (import-linter checks it, docs/architecture.md "The doors").

- :func:`mount` puts the console's pages, static files, security headers and HTML error
  pages into the one FastAPI app (``services/wiring/app.py``);
- :func:`create_link` mints a one-time sign-in link (``touchline console link``).
"""

from __future__ import annotations

from services.console.router import mount
from services.console.session import create_link

__all__ = ["create_link", "mount"]
