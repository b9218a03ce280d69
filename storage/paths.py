"""Where the embedded default keeps its local state, in one place:

var/                      PINREC_VAR_DIR: the S3 server's data, its environment file, Dagster's home
var/<source>/             PINREC_DATA_DIR: the event table, Feast's data, models, lifecycle state
"""

from __future__ import annotations

import os
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
    return var_dir(env) / (source or env.get("PINREC_SOURCE") or "simulated")


def s3_env_file(environ: Mapping[str, str] | None = None) -> Path:
    """The S3 server's environment file (address and generated credentials, mode 0600)."""
    return var_dir(environ) / "s3.env"
