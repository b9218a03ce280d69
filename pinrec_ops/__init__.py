"""The Dagster layer of pinrec-ops, and the only package that imports dagster.

    definitions.py   the code location: every module under defs/ loaded as Dagster loads a project
    defs/            shared config, resources, partitions, jobs and policies at the top;
                     one folder per area: data/ (ingest, features, online store),
                     lifecycle/ (pretrain, fine-tune, publish, canary, champion, drift),
                     operations/ (freshness checks, run-failure sensor)
    runs.py          runs of the code location's jobs in this process (CLI, tests, benchmarks)
    cli.py           `pinrec-ops`: the operator's command line
"""

import warnings

from dagster import BetaWarning

# BackfillPolicy is marked beta; it is the documented way to run a partition range in one run.
warnings.filterwarnings("ignore", category=BetaWarning)
