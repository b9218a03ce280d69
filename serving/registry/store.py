"""Published versions in S3: immutable versions with manifests, pointer files, retention.

Layout (docs/design.md, "Index publication")::

    s3://{bucket}/{prefix}/versions/{surface}/{version}/model.pt       weights only
                                                       /index.faiss    faiss index
                                                       /item_ids.npy   row -> item id (int64)
                                                       /manifest.json  written last
    s3://{bucket}/{prefix}/serving/{surface}/champion.json  {"version", "previous", "updated_at"}
    s3://{bucket}/{prefix}/serving/{surface}/canary.json    {"version", "traffic", "updated_at"}

Rules:

* The manifest lists sha256 and size of every file, the index parameters and measured recall,
  metrics, data partitions, config and parent versions. It is written last, with
  ``If-None-Match: *`` (:func:`storage.s3.put_if_absent`), so a version is never overwritten;
  a version without a manifest is invisible (:meth:`Registry.list_versions` skips it).
* Version ids sort by time and name their content: ``YYYYMMDDTHHMMSSZ-<8 hex>``, the hex being
  the first 8 of ``id_sha256``, the sha256 of what the version *is* (:func:`identity`: the
  surface, each file's sha256, the index kind and search parameters, the model and serving
  config), not of build timings, metrics, data partitions or the caller's provenance (local run
  paths). Publishing content that is already a visible version returns that version; a publish
  whose manifest write landed but whose answer was lost succeeds on the retry. The manifest's
  ``content_sha256`` (over the whole manifest) and ``id_sha256`` are recomputed by readers: a
  manifest edited in place no longer matches. (Schema-1 manifests, whose id hashed the whole
  manifest, are still read.)
* Readers verify every file's size and sha256 before use (:meth:`Registry.fetch`); a mismatch
  raises :class:`IntegrityError` and nothing of that version is used.
* A pointer names only a version that loads: promote, rollback and set_canary first fetch it,
  load it as the service does and ask it known queries (the ``load_check`` the registry is built
  with: ``serving.service.checks.checked_registry`` builds one with ``check_version``), and refuse
  with :class:`LoadCheckError` when it cannot serve (a registry without a load check, or
  ``check=False``, skips that, for tests that need a broken version named). The registry does not
  import the service: the check is handed to it.
* Pointers are small JSON files rewritten by promote / rollback / canary; ``champion.json``
  keeps the versions it replaced (newest first) in ``previous``, which rollback pops. Every
  pointer update is conditional: read (body + ETag), compute the new pointer, write it with
  ``If-Match`` on that ETag (``If-None-Match: *`` for a new pointer), delete with ``If-Match``;
  a refused write (412: another writer got there first) re-reads and recomputes, at most
  ``POINTER_ATTEMPTS`` times, then :class:`PointerConflictError`. So racing promotions all
  land in ``previous`` in the order they were written, and a delete never removes a pointer
  it did not read.
* Staleness: promote never replaces a champion trained on newer data (its manifest's newest data
  partition) with a version trained on older data (:func:`stale_reason`, checked inside the
  conditional update, so a promotion racing a newer one cannot undo it); it raises
  :class:`StaleVersionError`. An operator who means it passes ``allow_older=True``; rollback is
  always allowed (going back is its purpose).
* Retention keeps the newest ``keep`` versions and every version a pointer names (champion,
  canary, and the champion's rollback history); it deletes a version's manifest first, so a
  version is never half-visible.

Surfaces and version ids are validated against strict patterns before they go into a key.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from serving.registry.local import LocalVersion, sweep_stale_downloads
from serving.registry.manifest import (
    _KEEP,
    CANARY,
    CHAMPION,
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    POINTER_ATTEMPTS,
    ROLLBACK_HISTORY,
    VERSION_FILES,
    VERSION_RE,
    IntegrityError,
    PointerConflictError,
    RegistryError,
    StaleVersionError,
    VersionExistsError,
    VersionNotFoundError,
    _canonical,
    content_sha256,
    data_through,
    id_sha256,
    sha256_file,
    stale_reason,
    validate_surface,
    validate_version,
)
from storage.s3 import (
    ObjectNotFoundError,
    S3Settings,
    delete_if_match,
    download_file,
    get_bytes,
    get_with_etag,
    list_keys,
    make_client,
    object_exists,
    put_conditional,
    put_if_absent,
    upload_file,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _server_time(responses: Sequence[Mapping[str, Any]]) -> datetime:
    """The server's clock, from the HTTP Date header of its answers (the latest of them); the
    local clock only when a server sends none."""
    from email.utils import parsedate_to_datetime

    stamps = []
    for response in responses:
        header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if header:
            try:
                stamps.append(parsedate_to_datetime(header))
            except (TypeError, ValueError):
                continue
    return max(stamps) if stamps else _now()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Registry:
    """Versions and pointers of every surface under one S3 prefix."""

    def __init__(
        self,
        settings: S3Settings,
        client: Any | None = None,
        *,
        load_check: Callable[[Registry, str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)
        self.bucket = settings.bucket
        self.load_check = load_check  # promote / rollback / set_canary load and query first

    @classmethod
    def from_env(cls) -> Registry:
        return cls(S3Settings.from_env())

    # -- keys -------------------------------------------------------------------------------

    def version_key(self, surface: str, version: str, name: str = "") -> str:
        validate_surface(surface)
        validate_version(version)
        return self.settings.key("versions", surface, version, name)

    def pointer_key(self, surface: str, role: str) -> str:
        validate_surface(surface)
        if role not in (CHAMPION, CANARY):
            raise ValueError(f"unknown pointer {role!r}")
        return self.settings.key("serving", surface, f"{role}.json")

    # -- publication ------------------------------------------------------------------------

    def publish(
        self,
        surface: str,
        files: Mapping[str, str | os.PathLike[str]],
        *,
        index: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        data_partitions: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        parents: Sequence[str] = (),
        created_at: datetime | None = None,
    ) -> str:
        """Upload ``files`` (model.pt, index.faiss, item_ids.npy), then the manifest (last, only
        if absent). Returns the version id: the existing one when this content (:func:`identity`)
        is a visible version already, so publishing is idempotent. :class:`VersionExistsError`
        only when the id is taken by other content."""
        validate_surface(surface)
        missing = set(VERSION_FILES) - set(files)
        extra = set(files) - set(VERSION_FILES)
        if missing or extra:
            raise ValueError(
                f"a version holds exactly {VERSION_FILES}; missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for p in parents:
            validate_version(p)
        created = created_at or _now()
        entries = {}
        for name in VERSION_FILES:
            path = Path(files[name])
            entries[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        manifest: dict[str, Any] = {
            "schema": MANIFEST_SCHEMA,
            "surface": surface,
            "created_at": _iso(created),
            "files": entries,
            "index": dict(index),
            "metrics": dict(metrics or {}),
            "data_partitions": list(data_partitions),
            "config": dict(config or {}),
            "parents": list(parents),
        }
        manifest = json.loads(_canonical(manifest))  # as it will read back (tuples -> lists, ...)
        ident = id_sha256(manifest)
        existing = self._version_with_content(surface, ident)
        if existing is not None:  # the same content is a version already: that is the answer
            try:
                self._require_version(surface, existing)
            except IntegrityError:  # an object is missing or cut short: put the same bytes back
                for name in VERSION_FILES:
                    upload_file(self.client, self.bucket, self.version_key(surface, existing, name), files[name])
            return existing
        version = f"{created.astimezone(UTC):%Y%m%dT%H%M%SZ}-{ident[:8]}"
        manifest = {"version": version, **manifest, "id_sha256": ident}
        manifest["content_sha256"] = content_sha256({k: v for k, v in manifest.items() if k != "content_sha256"})
        # content_sha256 is not part of what it hashes: recompute without it on read.
        manifest_key = self.version_key(surface, version, MANIFEST_FILE)
        if object_exists(self.client, self.bucket, manifest_key):  # never touch a published one
            self._raise_exists(surface, version, ident)
        for name in VERSION_FILES:
            upload_file(self.client, self.bucket, self.version_key(surface, version, name), files[name])
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        if not put_if_absent(self.client, self.bucket, manifest_key, body):
            # Someone wrote this manifest between our check and our write: another publisher of
            # the same content, or our own write whose answer was lost (boto3 retried it and got
            # 412). Success if it names this content.
            if self._has_content(surface, version, ident):
                return version
            self._raise_exists(surface, version, ident)
        return version

    def _has_content(self, surface: str, version: str, ident: str) -> bool:
        try:
            return self.manifest(surface, version).get("id_sha256") == ident
        except (VersionNotFoundError, IntegrityError):
            return False

    def _version_with_content(self, surface: str, ident: str) -> str | None:
        """The visible version whose content is ``ident`` (its id ends in its first 8 hex and
        its verified manifest names it), if any."""
        for version in reversed(self.list_versions(surface)):
            if version.endswith("-" + ident[:8]) and self._has_content(surface, version, ident):
                return version
        return None

    def _raise_exists(self, surface: str, version: str, ident: str) -> None:
        raise VersionExistsError(
            f"version {surface}/{version} exists already with other content "
            f"(or a manifest that does not verify) than this publish "
            f"(id_sha256 {ident[:16]}...); versions are immutable: nothing was written"
        )

    # -- reading ----------------------------------------------------------------------------

    def list_versions(self, surface: str) -> list[str]:
        """Visible versions (those with a manifest), oldest first."""
        prefix = self.settings.key("versions", validate_surface(surface)) + "/"
        found = set()
        for key in list_keys(self.client, self.bucket, prefix):
            rest = key[len(prefix) :]
            version, _, name = rest.partition("/")
            if name == MANIFEST_FILE and VERSION_RE.fullmatch(version):
                found.add(version)
        return sorted(found)

    def _all_version_dirs(self, surface: str) -> dict[str, list[str]]:
        prefix = self.settings.key("versions", validate_surface(surface)) + "/"
        dirs: dict[str, list[str]] = {}
        for key in list_keys(self.client, self.bucket, prefix):
            version = key[len(prefix) :].partition("/")[0]
            dirs.setdefault(version, []).append(key)
        return dirs

    def manifest(self, surface: str, version: str) -> dict[str, Any]:
        """The version's manifest, checked against its id; :class:`VersionNotFoundError` when
        the version has no manifest (absent or half-written)."""
        key = self.version_key(surface, version, MANIFEST_FILE)
        try:
            raw = get_bytes(self.client, self.bucket, key)
        except ObjectNotFoundError as exc:
            raise VersionNotFoundError(f"no version {surface}/{version} (no manifest)") from exc
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError(f"manifest of {surface}/{version} is not JSON: {exc}") from exc
        self._check_manifest(surface, version, manifest)
        return manifest

    @staticmethod
    def _check_manifest(surface: str, version: str, manifest: Any) -> None:
        where = f"manifest of {surface}/{version}"
        if not isinstance(manifest, dict):
            raise IntegrityError(f"{where} is not a JSON object")
        if manifest.get("version") != version or manifest.get("surface") != surface:
            raise IntegrityError(f"{where} names {manifest.get('surface')}/{manifest.get('version')}")
        files = manifest.get("files")
        if not isinstance(files, dict) or set(files) != set(VERSION_FILES):
            raise IntegrityError(f"{where} must list exactly {VERSION_FILES}")
        for name, entry in files.items():
            if not (
                isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int)
            ):
                raise IntegrityError(f"{where}: bad entry for {name}: {entry!r}")
        body = {k: v for k, v in manifest.items() if k != "content_sha256"}
        content = content_sha256(body)
        if manifest.get("schema", 1) == 1:  # the id hashed the whole manifest
            named = content
        else:
            named = id_sha256(manifest)
            if manifest.get("id_sha256") != named:
                raise IntegrityError(f"{where} does not match its id hash (edited after publication?)")
        if content != manifest.get("content_sha256") or not version.endswith("-" + named[:8]):
            raise IntegrityError(f"{where} does not match its content hash (edited after publication?)")

    def fetch(self, surface: str, version: str, cache_dir: str | os.PathLike[str]) -> LocalVersion:
        """Download the version into ``cache_dir/{surface}/{version}`` and verify every file's
        size and sha256 against the manifest. Files already there are re-verified, not trusted.
        :class:`IntegrityError` on any mismatch (the bad download is removed)."""
        manifest = self.manifest(surface, version)
        final = Path(cache_dir) / surface / version
        sweep_stale_downloads(final.parent)
        if final.is_dir():
            try:
                self._verify_dir(surface, version, manifest, final)
                return LocalVersion(surface, version, manifest, final)
            except IntegrityError:
                shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
        try:
            for name in VERSION_FILES:
                try:
                    download_file(self.client, self.bucket, self.version_key(surface, version, name), tmp / name)
                except ObjectNotFoundError as exc:
                    raise IntegrityError(f"{surface}/{version}: {name} is missing") from exc
            self._verify_dir(surface, version, manifest, tmp)
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return LocalVersion(surface, version, manifest, final)

    def repair(self, surface: str, version: str, source_dir: str | os.PathLike[str]) -> list[str]:
        """Put back every object of ``version`` that no longer matches its manifest (damaged or
        missing in S3), from ``source_dir``, a local copy verified against the same manifest
        first (:class:`IntegrityError` if it does not match: nothing is written). The version
        stays what its manifest names: only the manifest's own bytes are written. Returns the
        files put back."""
        manifest = self.manifest(surface, version)
        source = Path(source_dir)
        self._verify_dir(surface, version, manifest, source)
        repaired = []
        with tempfile.TemporaryDirectory(prefix=f".repair-{version}.") as tmp:
            for name in VERSION_FILES:
                entry, key = manifest["files"][name], self.version_key(surface, version, name)
                try:
                    download_file(self.client, self.bucket, key, Path(tmp) / name)
                    intact = (Path(tmp) / name).stat().st_size == entry["size"] and sha256_file(
                        Path(tmp) / name
                    ) == entry["sha256"]
                except ObjectNotFoundError:
                    intact = False
                if not intact:
                    upload_file(self.client, self.bucket, key, source / name)
                    repaired.append(name)
        return repaired

    @staticmethod
    def _verify_dir(surface: str, version: str, manifest: dict[str, Any], directory: Path) -> None:
        for name in VERSION_FILES:
            entry = manifest["files"][name]
            path = directory / name
            if not path.is_file():
                raise IntegrityError(f"{surface}/{version}: {name} is missing")
            size = path.stat().st_size
            if size != entry["size"]:
                raise IntegrityError(f"{surface}/{version}: {name} has {size} bytes, manifest says {entry['size']}")
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise IntegrityError(
                    f"{surface}/{version}: {name} sha256 {digest[:12]}... does not match "
                    f"the manifest's {entry['sha256'][:12]}..."
                )

    # -- pointers ---------------------------------------------------------------------------

    def _read_pointer_versioned(self, surface: str, role: str) -> tuple[dict[str, Any] | None, str | None]:
        """(pointer JSON or None, ETag it was read with or None when there is no object)."""
        try:
            raw, etag = get_with_etag(self.client, self.bucket, self.pointer_key(surface, role))
        except ObjectNotFoundError:
            return None, None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"{role}.json of {surface} is not JSON: {exc}") from exc
        if not isinstance(data, dict) or not data.get("version"):
            return None, etag
        validate_version(data["version"])
        return data, etag

    def read_pointer(self, surface: str, role: str) -> dict[str, Any] | None:
        """The pointer's JSON, or None when there is none (or it names no version)."""
        return self._read_pointer_versioned(surface, role)[0]

    def champion(self, surface: str) -> str | None:
        data = self.read_pointer(surface, CHAMPION)
        return data["version"] if data else None

    def canary(self, surface: str) -> tuple[str, float] | None:
        data = self.read_pointer(surface, CANARY)
        if not data or float(data.get("traffic", 0)) <= 0:
            return None
        return data["version"], float(data["traffic"])

    def _update_pointer(
        self, surface: str, role: str, update: Callable[[dict[str, Any] | None], Any]
    ) -> dict[str, Any] | None:
        """Read the pointer, ``update(current)`` -> the new pointer (a dict), None to delete it, or
        ``_KEEP``; write it conditionally on the ETag read. A refused write re-reads and calls
        ``update`` again (it may raise to give up), at most ``POINTER_ATTEMPTS`` times."""
        key = self.pointer_key(surface, role)
        for attempt in range(POINTER_ATTEMPTS):
            current, etag = self._read_pointer_versioned(surface, role)
            new = update(current)
            if new is _KEEP:
                return current
            if new is None:
                if etag is None or delete_if_match(self.client, self.bucket, key, etag):
                    return None
            else:
                body = json.dumps({**new, "updated_at": _iso(_now())}, indent=2, sort_keys=True).encode()
                if (
                    put_conditional(self.client, self.bucket, key, body, if_match=etag, content_type="application/json")
                    is not None
                ):
                    return new
            time.sleep(random.uniform(0.0, 0.05 * 2 ** min(attempt, 4)))  # another writer won: re-read
        raise PointerConflictError(
            f"{role}.json of {surface} changed under each of {POINTER_ATTEMPTS} "
            f"conditional writes; nothing was written by this update"
        )

    def _require_version(self, surface: str, version: str) -> dict[str, Any]:
        manifest = self.manifest(surface, validate_version(version))  # raises when invisible
        for name, entry in manifest["files"].items():
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self.version_key(surface, version, name))
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    raise IntegrityError(f"{surface}/{version}: {name} is missing") from exc
                raise
            if head["ContentLength"] != entry["size"]:
                raise IntegrityError(
                    f"{surface}/{version}: {name} has {head['ContentLength']} bytes, manifest says {entry['size']}"
                )
        return manifest

    def check_loadable(self, surface: str, version: str) -> dict[str, Any]:
        """Fetch, load and query the version as the service would (the registry's ``load_check``,
        ``serving.service.checks.check_version``); :class:`LoadCheckError` (or
        :class:`IntegrityError`) when it cannot serve."""
        if self.load_check is None:
            raise RegistryError(
                "this registry was built without a load check "
                "(serving.service.checks.checked_registry builds one with it)"
            )
        return self.load_check(self, surface, version)

    def _ready_to_name(self, surface: str, version: str, check: bool | None) -> dict[str, Any]:
        """What a pointer may name: visible, complete, and (unless told not to) loadable."""
        manifest = self._require_version(surface, version)
        if self.load_check is not None if check is None else check:
            self.check_loadable(surface, version)
        return manifest

    def data_through(self, surface: str, version: str | None) -> str | None:
        """The newest day `version` trained on (None for no version or no data partitions)."""
        return None if version is None else data_through(self.manifest(surface, version))

    def promote(
        self, surface: str, version: str, *, check: bool | None = None, allow_older: bool = False
    ) -> dict[str, Any]:
        """Point champion.json at ``version`` (which must be visible, complete, and load and
        answer a known query, see :meth:`check_loadable`); the version it replaces goes first
        into ``previous``. A canary on the same version is cleared. :class:`StaleVersionError`
        when the champion trained on newer data (unless ``allow_older``)."""
        ours = data_through(self._ready_to_name(surface, version, check))

        def promoted(current: dict[str, Any] | None) -> dict[str, Any]:
            current = current or {}
            if not allow_older and current.get("version"):
                stale = stale_reason(version, ours, current["version"], self.data_through(surface, current["version"]))
                if stale:
                    raise StaleVersionError(f"{surface}/{version}: {stale}")
            previous = list(current.get("previous", []))
            if current.get("version") and current["version"] != version:
                previous.insert(0, current["version"])
            previous = [v for v in previous if v != version][:ROLLBACK_HISTORY]
            return {"version": version, "previous": previous}

        data = self._update_pointer(surface, CHAMPION, promoted)
        self._update_pointer(surface, CANARY, lambda canary: None if canary and canary["version"] == version else _KEEP)
        return data

    def rollback(self, surface: str, to: str | None = None, *, check: bool | None = None) -> dict[str, Any]:
        """Point champion.json back at the previous champion (or at ``to``), which must load."""
        checked: set[str] = set()

        def rolled_back(current: dict[str, Any] | None) -> dict[str, Any]:
            if not current:
                raise RegistryError(f"{surface} has no champion to roll back")
            previous = [v for v in current.get("previous", []) if v != current["version"]]
            target = to
            if target is None:
                if not previous:
                    raise RegistryError(f"{surface}: champion {current['version']} has no previous version")
                target = previous[0]
            if target not in checked:
                self._ready_to_name(surface, target, check)
                checked.add(target)
            rest = [v for v in previous if v != target]
            return {"version": target, "previous": rest, "rolled_back_from": current["version"]}

        return self._update_pointer(surface, CHAMPION, rolled_back)

    def set_canary(self, surface: str, version: str, traffic: float, *, check: bool | None = None) -> dict[str, Any]:
        traffic = float(traffic)
        if not 0.0 <= traffic <= 1.0:
            raise ValueError(f"canary traffic must be in [0, 1], got {traffic}")
        self._ready_to_name(surface, version, check)
        data = {"version": version, "traffic": traffic}
        return self._update_pointer(surface, CANARY, lambda _current: data)

    def clear_canary(self, surface: str) -> None:
        """Remove canary.json (conditionally on what was read: a canary written meanwhile is
        removed by the retry only if it is still there)."""
        self._update_pointer(surface, CANARY, lambda _current: None)

    # -- retention --------------------------------------------------------------------------

    def protected(self, surface: str) -> set[str]:
        """Versions a pointer names: champion, its rollback history, canary."""
        out = set()
        champ = self.read_pointer(surface, CHAMPION)
        if champ:
            out.add(champ["version"])
            out.update(v for v in champ.get("previous", []) if VERSION_RE.fullmatch(str(v)))
        canary = self.read_pointer(surface, CANARY)
        if canary:
            out.add(canary["version"])
        return out

    def retain(
        self, surface: str, keep: int, *, stale_after_s: float = 24 * 3600.0, dry_run: bool = False
    ) -> list[str]:
        """Delete visible versions beyond the newest ``keep`` that no pointer names, and
        half-written versions (no manifest) whose newest object is older than
        ``stale_after_s``. Returns the deleted version ids."""
        if keep < 1:
            raise ValueError("keep must be >= 1")
        visible = self.list_versions(surface)
        keep_set = set(visible[-keep:]) | self.protected(surface)
        doomed = [v for v in visible if v not in keep_set]
        dirs = self._all_version_dirs(surface)
        for version, keys in dirs.items():
            if version in visible or not VERSION_RE.fullmatch(version):
                continue
            heads = [self.client.head_object(Bucket=self.bucket, Key=k) for k in keys]
            newest = max(h["LastModified"] for h in heads)
            # the age by the server's clock (its Date header), never the local one: a skewed
            # local clock must not delete an upload in progress nor keep litter forever
            if (_server_time(heads) - newest).total_seconds() > stale_after_s:
                doomed.append(version)
        if dry_run:
            return sorted(doomed)
        for version in doomed:
            keys = dirs.get(version, [])
            manifest_key = self.version_key(surface, version, MANIFEST_FILE)
            if manifest_key in keys:  # invisible first, then the rest
                self.client.delete_object(Bucket=self.bucket, Key=manifest_key)
            for key in keys:
                if key != manifest_key:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
        return sorted(doomed)
