"""Every table of every service, for Alembic and the tests."""

from services.ingest import models as _ingest  # noqa: F401
from services.outreach import models as _outreach  # noqa: F401
from services.rules import models as _rules  # noqa: F401
from shared import consumer_progress as _consumer_progress  # noqa: F401
from shared import models as _shared  # noqa: F401
from shared import outbox as _outbox  # noqa: F401
from shared.db import Base
from shared.jobs import models as _jobs  # noqa: F401

metadata = Base.metadata
