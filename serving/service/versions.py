"""The versions a service holds, kept in step with the pointer files in the background.

``VersionManager.refresh()`` reads ``champion.json`` and ``canary.json`` of every served surface;
when one names a version other than the one loaded, it fetches it (every checksum verified by
``Registry.fetch``), loads it (``LoadedVersion.from_local``) and only then swaps the surface's
state, one reference assignment.

When the champion the pointer names cannot be fetched or loaded, the surface falls back to the
newest loadable earlier champion: the versions in the pointer's ``previous`` history, newest
first, stopping at the one already loaded (a running service keeps it; a restarted one loads the
first that works). The fallback is logged (a warning naming both versions), counted in
``fallback_counts`` (``pinrec_version_fallbacks_total{surface,pointer_version,serving_version}``)
and shown while it lasts in ``fallbacks`` (``pinrec_serving_fallback``); the failed version is
retried after ``retry_after_s`` and served as soon as it loads.

Readiness is per surface (``surface_ready``: a champion is loaded). The process as a whole is
``ready`` once its first refresh has run over every surface and at least one surface has a
champion: a surface without one answers 503 on its own requests and on ``/readyz/{surface}``
without taking the other surfaces out of service. A request takes the state once at its start and keeps using
those objects, so a swap never drops or fails a request; the old version is freed when its last
request finishes. A version that fails to fetch, verify or load is not used: the old one keeps
serving, the failure is recorded (``errors``, ``load_counts``, and ``load_failures`` by version
and reason) and retried after ``retry_after_s``. ``errors`` (shown by ``/versions``) holds the
exception type and a fixed sentence (:func:`public_error`), never the message, which can name the
S3 endpoint, object keys or local paths; the full error is logged. ``start()`` runs ``refresh`` every
``poll_interval_s`` in a daemon thread.

``on_swap(fn)`` registers ``fn(surface, replaced)``, called after a swap with the
``LoadedVersion`` s of that surface no longer served (the service drops their per-user encoder
states).

Canary routing is by a stable hash of (surface, user_id): the same user always gets the same
version while the canary's traffic fraction is unchanged, in every process.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.registry.manifest import CHAMPION, VERSION_RE, validate_surface
from serving.registry.store import Registry
from serving.service.retriever import LoadedVersion

log = logging.getLogger("serving.service.versions")


def public_error(exc: BaseException) -> dict[str, str]:
    """What ``/versions`` may say about a failure: the exception's type and a fixed sentence for
    its kind. Never its message, which can carry the S3 endpoint, bucket, object keys or local
    paths (those go to the log)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from serving.registry.manifest import IntegrityError, LoadCheckError, VersionNotFoundError
    from storage.s3 import ObjectNotFoundError

    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (VersionNotFoundError, "the version is not published (no manifest)"),
        (IntegrityError, "a file of the version does not match its manifest (missing, size or checksum)"),
        (LoadCheckError, "the version does not load or does not answer a known query"),
        (ObjectNotFoundError, "an object the pointer needs is missing"),
        ((BotoCoreError, ClientError), "the object store is unreachable or refused the request"),
        (OSError, "a local file operation failed (cache folder)"),
    ]
    reason = next((text for cls, text in kinds if isinstance(exc, cls)), "the version failed to load")
    return {"error": type(exc).__name__, "reason": reason}


def canary_fraction(surface: str, user_id: int) -> float:
    """A stable number in [0, 1) for (surface, user): users below the traffic go to the canary."""
    digest = hashlib.blake2b(f"{surface}:{int(user_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class SurfaceState:
    champion: LoadedVersion | None = None
    canary: LoadedVersion | None = None
    traffic: float = 0.0

    def route(self, surface: str, user_id: int) -> tuple[LoadedVersion | None, str]:
        if self.canary is not None and self.traffic > 0 and canary_fraction(surface, user_id) < self.traffic:
            return self.canary, "canary"
        return self.champion, "champion"


class VersionManager:
    def __init__(
        self,
        registry: Registry,
        surfaces: list[str],
        cache_dir: str | Path,
        *,
        poll_interval_s: float = 5.0,
        retry_after_s: float = 30.0,
        feature_codes: Mapping[str, Any] | None = None,
        features_where: str = "the features",
    ) -> None:
        """`feature_codes`: the code mapping of the features the service reads
        (`feature_pipeline.store.feature_codes`); a version whose codes disagree is refused at
        load (counted as a load failure, the loaded version keeps serving)."""
        self.feature_codes = feature_codes
        self.features_where = features_where
        if not surfaces:
            raise ValueError("serve at least one surface")
        self.registry = registry
        self.surfaces = [validate_surface(s) for s in dict.fromkeys(surfaces)]
        self.cache_dir = Path(cache_dir)
        self.poll_interval_s = poll_interval_s
        self.retry_after_s = retry_after_s
        self._states: dict[str, SurfaceState] = {s: SurfaceState() for s in self.surfaces}
        self._failed: dict[tuple[str, str], float] = {}  # (surface, version) -> when it failed
        self.errors: dict[str, dict[str, Any]] = {}
        self.load_counts: Counter[tuple[str, str]] = Counter()  # (surface, result)
        self.load_failures: Counter[tuple[str, str, str]] = Counter()  # (surface, version, reason)
        self.swaps = 0
        self.fallbacks: dict[str, dict[str, str]] = {}  # surface -> {pointer_version, serving_version}
        self.fallback_counts: Counter[tuple[str, str, str]] = Counter()  # (surface, pointer, serving)
        self.first_refresh_done = False
        self._swap_listeners: list[Callable[[str, list[LoadedVersion]], None]] = []
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading state ----------------------------------------------------------------------

    def state(self, surface: str) -> SurfaceState | None:
        return self._states.get(surface)

    def surface_ready(self, surface: str) -> bool:
        """The surface has a verified champion loaded (False for a surface not served here)."""
        st = self._states.get(surface)
        return st is not None and st.champion is not None

    @property
    def ready(self) -> bool:
        """The first refresh has run over every surface and at least one has a champion."""
        return self.first_refresh_done and any(self.surface_ready(s) for s in self.surfaces)

    def loaded(self) -> dict[str, dict[str, Any]]:
        out = {}
        for surface, st in self._states.items():
            out[surface] = {
                "champion": st.champion.version if st.champion else None,
                "canary": st.canary.version if st.canary else None,
                "canary_traffic": st.traffic if st.canary else 0.0,
            }
        return out

    # -- refreshing -------------------------------------------------------------------------

    def _load(self, surface: str, version: str, current: SurfaceState) -> LoadedVersion | None:
        for have in (current.champion, current.canary):
            if have is not None and have.version == version:
                return have
        failed_at = self._failed.get((surface, version))
        if failed_at is not None and time.monotonic() - failed_at < self.retry_after_s:
            return None
        try:
            local = self.registry.fetch(surface, version, self.cache_dir)
            loaded = LoadedVersion.from_local(local, self.feature_codes, self.features_where)
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving what we have
            self._failed[(surface, version)] = time.monotonic()
            self.load_counts[(surface, "error")] += 1
            self.load_failures[(surface, version, type(exc).__name__)] += 1
            self.errors[surface] = {"version": version, **public_error(exc), "at": time.time()}
            log.error("cannot load %s/%s, keeping the loaded version: %s", surface, version, exc)
            return None
        self._failed.pop((surface, version), None)
        self.load_counts[(surface, "ok")] += 1
        log.info("loaded %s/%s", surface, version)
        return loaded

    def _champion(self, surface: str, pointer: dict[str, Any] | None, current: SurfaceState) -> LoadedVersion | None:
        """The champion to serve: the pointer's version if it loads, else the newest loadable
        version of its ``previous`` history (never going back past the one loaded)."""
        have = current.champion
        if pointer is None:
            self.fallbacks.pop(surface, None)
            return have
        wanted = pointer["version"]
        if have is not None and have.version == wanted:
            self.fallbacks.pop(surface, None)
            return have
        loaded = self._load(surface, wanted, current)
        if loaded is not None:
            self.fallbacks.pop(surface, None)
            return loaded
        chosen = have
        for earlier in pointer.get("previous") or []:
            if not isinstance(earlier, str) or not VERSION_RE.fullmatch(earlier) or earlier == wanted:
                continue
            if have is not None and have.version == earlier:
                break  # what is loaded is the newest earlier champion that loads
            loaded = self._load(surface, earlier, current)
            if loaded is not None:
                chosen = loaded
                break
        if chosen is not None:
            fallback = {"pointer_version": wanted, "serving_version": chosen.version}
            if self.fallbacks.get(surface) != fallback:
                self.fallbacks[surface] = fallback
                self.fallback_counts[(surface, wanted, chosen.version)] += 1
                log.warning(
                    "%s: champion %s cannot be loaded; falling back to the earlier champion %s",
                    surface,
                    wanted,
                    chosen.version,
                )
        return chosen

    def refresh_surface(self, surface: str) -> SurfaceState:
        current = self._states[surface]
        pointer = self.registry.read_pointer(surface, CHAMPION)
        canary = self.registry.canary(surface)
        champion = self._champion(surface, pointer, current)
        new_canary, traffic = None, 0.0
        if canary is not None:
            canary_v, traffic = canary
            if champion is not None and canary_v == champion.version:
                new_canary, traffic = None, 0.0
            else:
                new_canary = self._load(surface, canary_v, current)
                if new_canary is None:
                    traffic = 0.0
        new = SurfaceState(champion, new_canary, traffic)
        if new != current:
            self._states[surface] = new  # the swap: one reference assignment
            self.swaps += 1
            self._clean_cache(surface, new)
            self._notify_swap(surface, current, new)
        return new

    def on_swap(self, fn: Callable[[str, list[LoadedVersion]], None]) -> None:
        """Call ``fn(surface, loaded versions no longer served)`` after every swap."""
        self._swap_listeners.append(fn)

    def _notify_swap(self, surface: str, old: SurfaceState, new: SurfaceState) -> None:
        kept = [v for v in (new.champion, new.canary) if v is not None]
        replaced = [v for v in (old.champion, old.canary) if v is not None and all(v is not k for k in kept)]
        for fn in self._swap_listeners:
            try:
                fn(surface, replaced)
            except Exception:  # noqa: BLE001 - a listener must not break the refresh
                log.exception("swap listener failed for %s", surface)

    def refresh(self) -> dict[str, dict[str, Any]]:
        with self._refresh_lock:
            for surface in self.surfaces:
                try:
                    self.refresh_surface(surface)
                except Exception as exc:  # noqa: BLE001 - S3 down etc.: keep serving
                    self.errors[surface] = {"version": None, **public_error(exc), "at": time.time()}
                    log.error("cannot read the pointers of %s: %s", surface, exc)
            self.first_refresh_done = True
        return self.loaded()

    def _clean_cache(self, surface: str, state: SurfaceState) -> None:
        keep = {v.version for v in (state.champion, state.canary) if v is not None}
        root = self.cache_dir / surface
        if root.is_dir():
            for child in root.iterdir():
                if child.is_dir() and child.name not in keep and not child.name.startswith("."):
                    shutil.rmtree(child, ignore_errors=True)

    # -- background polling -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="version-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.poll_interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
