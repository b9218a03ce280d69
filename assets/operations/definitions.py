"""The operations area's definitions for a deployment's settings (the freshness checks of its
surfaces' champions and of the online store). Dagster loads them through `defs` (the defs
folder), which reads the settings from the environment then."""

import dagster as dg

from assets.config import Settings, load_settings
from assets.operations.freshness import freshness_checks


def operations_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(asset_checks=freshness_checks(settings.surfaces))


@dg.definitions
def defs() -> dg.Definitions:
    return operations_definitions(load_settings())
