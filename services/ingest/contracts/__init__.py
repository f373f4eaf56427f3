"""Contract outcomes recorded over the API (the ``contract`` event's other door)."""
