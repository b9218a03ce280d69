"""Dagster wiring: Definitions, resources, partitions, jobs, schedules (and later sensors)."""
