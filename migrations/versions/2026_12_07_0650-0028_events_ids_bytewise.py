"""events: the event and account ids compared bytewise (the "C" collation, PostgreSQL)

Every raw event inserted walks two b-trees keyed by text, the primary key on event_id
and (account_id, timestamp), and its batch's rollups group the new rows by account_id.
In the database's collation (C.UTF-8 here, often en_US.UTF-8) each comparison is a call
into the C library's strcoll; in "C" it is a memcmp. Measured first by storing one
5,000-event batch, rolling it back and storing it again (the method of the earlier
figures), this looked like 18.5 -> 14.0 us of backend CPU per event; but each rollback
leaves dead index entries with the very keys inserted next, and comparing equal keys is
where strcoll costs most. Stored once into fresh databases (200,000 demo events, nothing
rolled back) the batch statement costs the same either way, 14-17.6 us per event
(docs/performance.md, "Ingest"): no gain to claim outside redelivered duplicates. Kept,
being landed and harmless: ids are opaque, no read needs them in a language's order (in
C.UTF-8 the order is the same; elsewhere only the order of ties between events at one
instant changes), and a comparison with another table's account_id takes this column's
collation, so its index still serves it. The indexes are rebuilt, the rows are not
rewritten. SQLite compares bytes already: nothing to do there.

Revision ID: 0028_events_ids_bytewise
Revises: 0027_signals_sorted
Create Date: 2026-12-07 06:50:00
"""
from __future__ import annotations

from alembic import op

revision = '0028_events_ids_bytewise'
down_revision = '0027_signals_sorted'
branch_labels = None
depends_on = None

COLUMNS = ('event_id', 'account_id')


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(
        'ALTER TABLE events ' + ', '.join(f'ALTER COLUMN {c} TYPE varchar(128) COLLATE "{collation}"' for c in COLUMNS)
    )


def upgrade() -> None:
    _collate('C')


def downgrade() -> None:
    _collate('default')
