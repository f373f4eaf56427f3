"""ingest: validates product events and keeps account, user and usage state."""
