"""Background jobs: long operations (backtests, forecasts) that run in the jobs worker,
report progress, can be cancelled and are bounded in time. See docs/jobs.md.

- :mod:`shared.jobs.service`: the registry of kinds (:func:`register`) and the
  commands (submit, read, list, cancel);
- :mod:`shared.jobs.runner`: the worker that claims and runs jobs;
- :mod:`shared.jobs.router`: ``/v1/jobs``.
"""

from shared.jobs.models import FINISHED, STATES, Job
from shared.jobs.runner import JobContext
from shared.jobs.service import JobKind, Progress, register, submit

__all__ = ["FINISHED", "STATES", "Job", "JobContext", "JobKind", "Progress", "register", "submit"]
