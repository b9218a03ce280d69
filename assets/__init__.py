"""The assets and their checks, by area, with the resources they take (imports dagster; the
orchestration layer above it loads these and adds jobs, schedules, sensors and the executor).
Each area's `definitions.py` builds the area from a `Settings` (and, as `@dg.definitions`, from
the environment's when Dagster loads the defs folder); no module reads a setting at import.

    config.py        the deployment's settings, parsed from an environment (`load_settings`)
    resources.py     typed resources (event source, vocabulary, data lake, Feast, S3, training)
    partitions.py    the day partitions of a first day; days.py: a run's day
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
