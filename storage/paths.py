"""Where the embedded default keeps its local state, in one place:

var/                      PINREC_VAR_DIR: the S3 server's data, its environment file, Dagster's home
var/<source>/             PINREC_DATA_DIR: the event table, Feast's data, models, lifecycle state
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("PINREC_VAR_DIR") or REPO_ROOT / "var")


def data_dir(source: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The deployment's data directory: PINREC_DATA_DIR, else var/<source> (source: PINREC_SOURCE,
    default simulated)."""
    env = os.environ if environ is None else environ
    if env.get("PINREC_DATA_DIR"):
        return Path(env["PINREC_DATA_DIR"])
    if env.get("PINREC_DEPLOYMENT"):
        return var_dir(env) / check_deployment_name(env["PINREC_DEPLOYMENT"])
    return var_dir(env) / (source or env.get("PINREC_SOURCE") or "simulated")


DEPLOYMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_deployment_name(name: str) -> str:
    if not DEPLOYMENT_NAME.match(name) or ".." in name:
        raise ValueError(
            f"deployment name {name!r}: use 1-63 lower-case letters, digits, '-', '_' or '.', starting with "
            "a letter or digit"
        )
    return name


def deployment_name(source: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """PINREC_DEPLOYMENT, else derived from the data directory (module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("PINREC_DEPLOYMENT"):
        return check_deployment_name(env["PINREC_DEPLOYMENT"])
    folder = data_dir(source, env).absolute()
    name = re.sub(r"[^a-z0-9_.-]+", "-", folder.name.lower()).strip("-.") or "data"
    if folder.parent != var_dir(env).absolute():
        name = f"{name[:50]}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"
    return name[:63]


def deployment_prefix(deployment: str) -> str:
    """The deployment's S3 key prefix inside the bucket."""
    return f"pinrec-ops/{deployment}"


def deployment_dagster_home(deployment: str, environ: Mapping[str, str] | None = None) -> Path:
    """The deployment's Dagster instance folder (DAGSTER_HOME, when set, is used instead)."""
    return var_dir(environ) / "dagster" / deployment


def s3_env_file(environ: Mapping[str, str] | None = None) -> Path:
    """The S3 server's environment file (address and generated credentials, mode 0600)."""
    return var_dir(environ) / "s3.env"
