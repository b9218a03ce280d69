"""What runs the assets: jobs and schedules (`jobs`), the executor, the outcome-drift sensor and
the run-failure sensor."""
