"""The sensor that runs the freshness checks of `assets.operations.freshness` (stopped by
default: switch it on in the UI, Automation)."""

import warnings
from collections.abc import Sequence

import dagster as dg


def freshness_checks_sensor(checks: Sequence[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """The sensor of the graph's freshness checks `checks`."""
    with warnings.catch_warnings():  # superseded by FreshnessPolicy: see assets.operations.freshness
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            name="freshness_checks_sensor",
            minimum_interval_seconds=3600,
            default_status=dg.DefaultSensorStatus.STOPPED,
        )
