"""Retry policy of the assets that talk to S3."""

import dagster as dg

# S3 hiccups (a throttled or restarting endpoint, a pointer another promotion changed between our
# read and write: serving.registry.store.PointerConflictError) retry with exponential backoff (2, 4, 8 s);
# real errors fail after 3 retries. Every S3 write here is idempotent, so a retry is safe.
S3_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)

# Every day partition is its own run, also in a backfill of a range: each partition's
# materialization is computed for that day and carries that day's figures.
ONE_RUN_PER_DAY = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
