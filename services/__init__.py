"""Touchline services: ingest, rules and outreach, plus the API app and the CLI that wire them."""
