"""The sensor that runs the freshness checks of `assets.operations.freshness` (stopped by
default: switch it on in the UI, Automation)."""

import warnings

import dagster as dg

from assets.operations.freshness import freshness_checks

with warnings.catch_warnings():  # superseded by FreshnessPolicy: see assets.operations.freshness
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks,
        name="freshness_checks_sensor",
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
