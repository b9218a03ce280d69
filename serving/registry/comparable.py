"""Whether a surface's champion may be compared with a candidate at all.

A champion of another deployment (a registry prefix shared by mistake, or one written before
deployments had prefixes of their own), of another vocabulary (other outcome or surface codes)
or of another item space (a catalogue that shares few items with the candidate's) measures
nothing about the candidate: figures on another world's items, staleness against another log's
days. Such a champion is never compared: the candidate is judged as the first one of its
deployment would be (on the floors alone) and the reason is said."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from serving.registry.manifest import ITEM_IDS_FILE

MIN_SHARED_ITEMS = 0.5  # of the smaller catalogue: below it, two versions rank different item spaces


def _item_ids(registry, surface: str, version: str) -> np.ndarray:
    from storage.s3 import get_bytes

    data = get_bytes(registry.client, registry.bucket, registry.version_key(surface, version, ITEM_IDS_FILE))
    return np.load(io.BytesIO(data), allow_pickle=False)


def why_not_comparable(registry, surface: str, candidate: str, champion: str) -> str | None:
    """None when `champion` may be compared with `candidate`, else the reason it may not."""
    ours, theirs = registry.manifest(surface, candidate), registry.manifest(surface, champion)
    ours_config, theirs_config = ours.get("config", {}), theirs.get("config", {})
    deployment, other = ours_config.get("deployment"), theirs_config.get("deployment")
    if deployment and other != deployment:
        return f"the champion {champion} belongs to deployment {other or '(unrecorded)'}, the candidate to {deployment}"
    vocabulary, other_vocabulary = ours_config.get("vocabulary"), theirs_config.get("vocabulary")
    if vocabulary and other_vocabulary and vocabulary != other_vocabulary:
        return f"the champion {champion} was trained with another vocabulary ({other_vocabulary})"
    if ours["files"][ITEM_IDS_FILE]["sha256"] != theirs["files"][ITEM_IDS_FILE]["sha256"]:
        mine, others = _item_ids(registry, surface, candidate), _item_ids(registry, surface, champion)
        shared = len(np.intersect1d(mine, others)) / max(1, min(len(mine), len(others)))
        if shared < MIN_SHARED_ITEMS:
            return (
                f"the champion {champion} ranks another item space ({shared:.0%} of the smaller catalogue shared, "
                f"at least {MIN_SHARED_ITEMS:.0%} needed)"
            )
    return None


def comparable_champion(registry, surface: str, candidate: str, log: Callable[[str], None] | None = None) -> str | None:
    """The surface's champion when it may be compared with `candidate`, else None (the reason
    handed to `log`)."""
    champion = registry.champion(surface)
    if champion is None or champion == candidate:
        return champion
    reason = why_not_comparable(registry, surface, candidate, champion)
    if reason is None:
        return champion
    if log is not None:
        log(f"{surface}: not compared with the champion: {reason}; the candidate is judged on its own")
    return None
