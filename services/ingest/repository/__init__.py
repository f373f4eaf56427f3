"""Every query ingest runs, one module per job:

- :mod:`.store`: the write path (a batch of events into the raw store, the accounts and
  users they touch, the rollups and last-seen markers; trait rows; pruning);
- :mod:`.accounts`: accounts and contacts (reads, snapshots, the rows ingest's commands change);
- :mod:`.metrics`: series over the daily rollups and last-seen markers;
- :mod:`.properties`: metrics over the raw events' properties and over contacts by role;
- :mod:`.events`: the stored raw events;
- :mod:`.chunks`: how a query over many accounts is cut into bounded statements.

Reads over many accounts are set-based: one statement per chunk of accounts, never one
query per account."""
