"""The check a version passes before a pointer (champion.json, canary.json) may name it.

``check_version(registry, surface, version)`` fetches the version into a temporary directory
(every checksum verified, the directory removed afterwards), loads it the way the service does
(``LoadedVersion.from_local``: weights with ``weights_only=True``, index dimension == model
dimension, index rows == item ids == the model's items) and asks it two known queries: a cold
start (empty history) and a one-item history. Each must return candidates from the catalogue
with finite scores. Anything else raises :class:`serving.registry.store.LoadCheckError` (or the
registry's own error when the version is missing or fails its checksums), and the pointer is not
moved. ``Registry.promote`` / ``rollback`` / ``set_canary`` call it when the registry was built
with it (``checked_registry``); a plain ``Registry(...)`` or ``check=False`` skips it, for tests
that need a broken version named.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np

from serving.registry.manifest import LoadCheckError, RegistryError
from serving.registry.store import Registry
from serving.service.encoder import UserSequence
from serving.service.retriever import LoadedVersion

SMOKE_K = 10


def _known_queries(loaded: LoadedVersion, surface: str) -> dict[str, UserSequence]:
    item = int(loaded.item_ids[0])
    code = loaded.codes.surface_code.get(surface, 0)
    engaged = loaded.codes.engaged_codes[0] if loaded.codes.engaged else 0  # an input token of this model
    one = UserSequence(
        np.array([item], np.int64),
        np.array([engaged], np.int64),
        np.array([code], np.int64),
        np.array([1_700_000_000_000_000], np.int64),
    )
    return {"cold start": UserSequence.empty(), f"one-item history ({item})": one}


def smoke_query(loaded: LoadedVersion, surface: str, k: int = SMOKE_K) -> dict[str, int]:
    """Run the known queries on a loaded version; :class:`LoadCheckError` when one returns no
    candidates, a candidate outside the catalogue or a non-finite score."""
    catalogue = set(loaded.item_ids.tolist())
    answers = {}
    for name, seq in _known_queries(loaded, surface).items():
        result = loaded.retrieve(seq, min(k, len(catalogue)))
        where = f"{surface}/{loaded.version}: the {name} query"
        if not result.candidates:
            raise LoadCheckError(f"{where} returned no candidates")
        outside = [c.item for c in result.candidates if c.item not in catalogue]
        if outside:
            raise LoadCheckError(f"{where} returned items outside the catalogue: {outside[:5]}")
        if not all(math.isfinite(c.score) for c in result.candidates):
            raise LoadCheckError(f"{where} returned non-finite scores")
        answers[name] = len(result.candidates)
    return answers


def check_version(registry: Registry, surface: str, version: str, k: int = SMOKE_K) -> dict[str, Any]:
    """Fetch, load and query ``version``; returns what was checked (dimension, items, answers)."""
    with tempfile.TemporaryDirectory(prefix="pinrec-check-") as tmp:
        local = registry.fetch(surface, version, tmp)  # RegistryError: missing, bad checksum
        try:
            loaded = LoadedVersion.from_local(local)
        except RegistryError as exc:
            raise LoadCheckError(f"{surface}/{version} does not load: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - whatever loading raises, the version is unusable
            raise LoadCheckError(f"{surface}/{version} does not load: {type(exc).__name__}: {exc}") from exc
    answers = smoke_query(loaded, surface, k)
    return {"version": version, "dim": int(loaded.index.d), "items": int(loaded.index.ntotal), "answers": answers}


def checked_registry(settings, client: Any | None = None) -> Registry:
    """A registry whose pointers name only versions that pass :func:`check_version`."""
    return Registry(settings, client, load_check=check_version)
