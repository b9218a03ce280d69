"""The assets and their checks, by area, with the resources they take (imports dagster; the
orchestration layer above it loads these and adds jobs, schedules, sensors and the executor).

    config.py        the deployment's settings, parsed from the environment once
    resources.py     typed resources (event source, vocabulary, data lake, Feast, S3, training)
    partitions.py    the day partitions; days.py: a run's day
    policies.py      retry and backfill policies; conventions.py: tags, owners, code versions
    state.py         what one lifecycle step hands the next; metadata.py: plots and tables
    data/            ingest, features, online store, serving log
    lifecycle/       pretrain, fine-tune, publish, canary, champion, online canary
    online/          online metrics of the serving log
    operations/      freshness checks
"""

import warnings

from dagster import BetaWarning

# BackfillPolicy is marked beta; it is the documented way to run a partition range in one run.
warnings.filterwarnings("ignore", category=BetaWarning)
