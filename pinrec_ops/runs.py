"""Run a selection of the code location's assets in this process (tests, benchmarks, notebooks):
one partition, or a partition range as a single run, with given resources."""

import functools
from datetime import date

import dagster as dg

from pinrec_ops.definitions import defs as load_definitions


@functools.cache
def code_location() -> dg.Definitions:
    """The code location's Definitions, loaded once per process."""
    return load_definitions()


def materialize_in_process(keys: list[str], resources: dict, instance: dg.DagsterInstance, *,
                           partition: date | None = None, partition_range: tuple[date, date] | None = None,
                           raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """`keys` are asset keys as the CLI writes them ("events", "homefeed/champion"); the checks
    of the selected assets run too."""
    defs = code_location()
    selection = dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(k) for k in keys])
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(selection.resolve(defs.resolve_asset_graph())))
    tags = {}
    if partition_range:
        tags = {"dagster/asset_partition_range_start": partition_range[0].isoformat(),
                "dagster/asset_partition_range_end": partition_range[1].isoformat()}
    return job.execute_in_process(instance=instance, resources=resources, tags=tags,
                                  partition_key=partition.isoformat() if partition else None,
                                  raise_on_error=raise_on_error)
