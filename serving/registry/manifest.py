"""What identifies a version: its files, manifest and ids (content and identity hashes), the
patterns surfaces and version ids must match, the registry's errors, and the one staleness rule
(`stale_reason`). `store.Registry` reads and writes these in S3."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

MODEL_FILE = "model.pt"
INDEX_FILE = "index.faiss"
ITEM_IDS_FILE = "item_ids.npy"
MANIFEST_FILE = "manifest.json"
VERSION_FILES = (MODEL_FILE, INDEX_FILE, ITEM_IDS_FILE)
CHAMPION = "champion"
CANARY = "canary"
MANIFEST_SCHEMA = 2  # 2: the id hashes identity(manifest); 1: it hashed the whole manifest
ROLLBACK_HISTORY = 10  # versions kept in champion.json's "previous"
POINTER_ATTEMPTS = 8  # conditional writes of one pointer update before PointerConflictError

SURFACE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSION_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class RegistryError(Exception):
    """Base class of the registry's own errors."""


class VersionNotFoundError(RegistryError, LookupError):
    """No visible version (no manifest) with that id."""


class VersionExistsError(RegistryError):
    """A manifest with that version id exists already: versions are immutable."""


class IntegrityError(RegistryError):
    """A file or manifest does not match what the manifest says."""


class LoadCheckError(RegistryError):
    """A version whose files verify but that does not load, or does not answer a known query
    (``serving.service.checks``): no pointer may name it."""


class StaleVersionError(RegistryError):
    """A promotion refused: the champion trained on newer data than the version to promote."""


class PointerConflictError(RegistryError):
    """A pointer kept changing under a conditional update: every attempt found that another
    writer had rewritten it since it was read."""


_KEEP = object()  # a pointer update that leaves the pointer as it is


def validate_surface(surface: str) -> str:
    if not isinstance(surface, str) or not SURFACE_RE.fullmatch(surface):
        raise ValueError(f"invalid surface name {surface!r} (expected {SURFACE_RE.pattern})")
    return surface


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ValueError(f"invalid version id {version!r} (expected YYYYMMDDTHHMMSSZ-<8 hex>)")
    return version


def sha256_file(path: str | os.PathLike[str], chunk: int = 4 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def content_sha256(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest without its ``version`` field (what the version id names)."""
    return hashlib.sha256(_canonical({k: v for k, v in manifest.items() if k != "version"})).hexdigest()


def identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a version is, the part of its manifest its id hashes: the surface, every file's
    sha256, the index kind and search parameters, and the model and serving config."""
    index = manifest.get("index") or {}
    config = manifest.get("config") or {}
    return {
        "surface": manifest.get("surface"),
        "files": {name: (entry or {}).get("sha256") for name, entry in (manifest.get("files") or {}).items()},
        "index": {k: index.get(k) for k in ("kind", "params", "metric")},
        "config": {k: config.get(k) for k in ("model", "serving")},
    }


def id_sha256(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(identity(manifest))).hexdigest()


def data_through(manifest: Mapping[str, Any]) -> str | None:
    """The newest day (ISO date) a version trained on: its manifest's newest data partition."""
    days = manifest.get("data_partitions") or []
    return max(days) if days else None


def stale_reason(version: str, ours: str | None, champion: str | None, theirs: str | None) -> str | None:
    """Why `version` (trained through `ours`) may not replace `champion` (through `theirs`), or
    None when it may: the one staleness rule (the gate reports it, promote enforces it)."""
    if champion is None or champion == version or not ours or not theirs or ours >= theirs:
        return None
    return (
        f"stale: the candidate trained on data through {ours}, the champion through {theirs}; "
        "an older model never replaces a newer one"
    )
