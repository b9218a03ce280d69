"""Dagster wiring: Definitions, resources, partitions, jobs, schedules, sensors, the CLI."""

import warnings

from dagster import BetaWarning

# BackfillPolicy is marked beta; it is the documented way to run a partition range in one run.
warnings.filterwarnings("ignore", category=BetaWarning)
