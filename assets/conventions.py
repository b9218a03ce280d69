"""What every asset declares, in one place: its owner, its area's tags, and a code version that
changes when the library code its output depends on changes (so the UI marks the materializations
made by older code as stale)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

DATA_OWNER = "team:data-platform"
ML_OWNER = "team:ml-platform"
OWNERS = {"data": [DATA_OWNER], "lifecycle": [ML_OWNER], "operations": [DATA_OWNER, ML_OWNER]}


def area_tags(area: str, **more: str) -> dict[str, str]:
    """Tags of an asset of `area` (data | lifecycle), plus any extra ones."""
    return {"area": area, **more}


def owners(area: str) -> list[str]:
    return list(OWNERS[area])


def code_version(*modules: str) -> str:
    """A short hash of the source files of `modules` (dotted names, e.g. "events.ingest"): the
    asset's own module (`__name__`) and the library code that decides its output."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no source for module {name!r}")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:12]


def online_store_kind(feast_config: Path) -> str:
    """`sqlite` or `redis`: the online store type the Feast profile names."""
    import yaml

    config = yaml.safe_load(Path(feast_config).read_text())
    return str((config.get("online_store") or {}).get("type", "sqlite")).split(".")[-1].lower()


def with_defaults(config: type, **defaults: object) -> type:
    """The `dg.Config` class `config` with the deployment's defaults for some of its fields (the
    descriptions kept): a check's config built with the settings of the graph it belongs to."""
    from pydantic import Field, create_model

    fields = {
        name: (
            config.model_fields[name].annotation,
            Field(default=value, description=config.model_fields[name].description),
        )
        for name, value in defaults.items()
    }
    return create_model(config.__name__, __base__=config, **fields)
