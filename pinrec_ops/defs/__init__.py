"""Dagster definitions, one folder per area. Shared at this level: `config` (the deployment's
settings), `resources`, `partitions`, `jobs` (jobs and schedules), `executor`, `policies`
(retries), `days`, `state` (what one lifecycle step hands the next), `metadata` (plots and tables
for the UI)."""
