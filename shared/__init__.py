"""Touchline's common package: settings, database, Kafka helpers, schemas, clock,
auth, errors, logging and metrics. Services depend on it; it depends on no service."""
