"""Deployments on this machine: one namespace each (storage.paths): a data directory (with its
Feast registry), a Dagster instance and an S3 prefix. The operator's commands record the
deployment they run in var/deployments/<name>.json; `pinrec-ops deployments` lists them and
`pinrec-ops deployments --remove NAME` removes one: its data, its runs and its objects in S3."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from storage.files import atomic_write_text
from storage.paths import check_deployment_name, deployment_dagster_home, var_dir


def records_dir() -> Path:
    return var_dir() / "deployments"


def use_deployment(settings) -> dict:
    """Point this process at the deployment of `settings` (its Dagster instance, unless
    DAGSTER_HOME is set) and record it; returns the record."""
    os.environ.setdefault("DAGSTER_HOME", str(deployment_dagster_home(settings.deployment)))
    record = {
        "name": settings.deployment,
        "source": settings.source,
        "data_dir": str(Path(settings.data_dir).absolute()),
        "dagster_home": str(Path(os.environ["DAGSTER_HOME"]).absolute()),
        "s3_prefix": settings.key_prefix,
        "last_used": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(records_dir() / f"{settings.deployment}.json", json.dumps(record, indent=2))
    return record


def list_deployments() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records_dir().glob("*.json"))]


def print_deployments() -> None:
    records = list_deployments()
    if not records:
        print(f"no deployments recorded under {records_dir()}")
        return
    print(f"{'deployment':<24} {'source':<15} {'last used':<26} data directory; S3 prefix")
    for r in records:
        print(f"{r['name']:<24} {r['source']:<15} {r['last_used']:<26} {r['data_dir']}; {r['s3_prefix']}")


def remove_deployment(name: str, s3_settings, client) -> list[str]:
    """Remove deployment `name`: its objects under its S3 prefix, its data directory and its
    Dagster instance (those this machine recorded for it), then its record. Returns what went."""
    from storage.s3 import delete_prefix

    check_deployment_name(name)
    path = records_dir() / f"{name}.json"
    if not path.exists():
        raise KeyError(name)
    record = json.loads(path.read_text())
    removed = [
        f"{delete_prefix(client, s3_settings.bucket, record['s3_prefix'] + '/')} objects under "
        f"s3://{s3_settings.bucket}/{record['s3_prefix']}/"
    ]
    for folder in (record["data_dir"], record["dagster_home"]):
        if Path(folder).exists():
            shutil.rmtree(folder)
            removed.append(folder)
    path.unlink()
    return removed
