"""The versions a service holds, kept in step with the pointer files in the background.

``VersionManager.refresh()`` reads ``champion.json`` and ``canary.json`` of every served surface;
when one names a version other than the one loaded, it fetches it (every checksum verified by
``Registry.fetch``), loads it (``LoadedVersion.from_local``) and only then swaps the surface's
state, one reference assignment. A request takes the state once at its start and keeps using
those objects, so a swap never drops or fails a request; the old version is freed when its last
request finishes. A version that fails to fetch, verify or load is not used: the old one keeps
serving, the failure is recorded (``errors``, ``load_counts``, and ``load_failures`` by version
and reason) and retried after ``retry_after_s``. ``start()`` runs ``refresh`` every
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.registry import Registry, validate_surface
from serving.retriever import LoadedVersion

log = logging.getLogger("serving.versions")


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
    def __init__(self, registry: Registry, surfaces: list[str], cache_dir: str | Path, *,
                 poll_interval_s: float = 5.0, retry_after_s: float = 30.0) -> None:
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
        self._swap_listeners: list[Callable[[str, list[LoadedVersion]], None]] = []
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading state ----------------------------------------------------------------------

    def state(self, surface: str) -> SurfaceState | None:
        return self._states.get(surface)

    @property
    def ready(self) -> bool:
        """Every served surface has a verified champion loaded."""
        return all(st.champion is not None for st in self._states.values())

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
            loaded = LoadedVersion.from_local(local)
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving what we have
            self._failed[(surface, version)] = time.monotonic()
            self.load_counts[(surface, "error")] += 1
            self.load_failures[(surface, version, type(exc).__name__)] += 1
            self.errors[surface] = {"version": version, "error": f"{type(exc).__name__}: {exc}",
                                    "at": time.time()}
            log.error("cannot load %s/%s, keeping the loaded version: %s", surface, version, exc)
            return None
        self._failed.pop((surface, version), None)
        self.load_counts[(surface, "ok")] += 1
        log.info("loaded %s/%s", surface, version)
        return loaded

    def refresh_surface(self, surface: str) -> SurfaceState:
        current = self._states[surface]
        champion_v = self.registry.champion(surface)
        canary = self.registry.canary(surface)
        champion = current.champion
        if champion_v is not None and (champion is None or champion.version != champion_v):
            champion = self._load(surface, champion_v, current) or champion
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
                    self.errors[surface] = {"version": None, "error": f"{type(exc).__name__}: {exc}",
                                            "at": time.time()}
                    log.error("cannot read the pointers of %s: %s", surface, exc)
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
