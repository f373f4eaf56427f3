"""The content library (docs/content.md): resources to send (articles, videos, webinars,
courses, checklists, templates), tagged with whom and what they are for; their API, their
import from YAML or CSV, and the routing a ``recommend`` step uses to pick one per
recipient (:mod:`.routing`). Nothing here imports the playbooks package: the step lives
there and imports this one."""
