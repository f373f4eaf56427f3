"""Pooled-CSM engagements: roster, assignment, time-box and reporting (docs/engagements.md)."""
