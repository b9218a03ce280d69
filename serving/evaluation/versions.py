"""Published versions as the canary evaluation gets them: fetched (checksums verified) and loaded
as the service loads them, the champion repaired from this machine's verified copy when its
object in S3 was damaged. Whatever makes a version unusable is a `LoadCheckError` (a verdict of
the canary); S3 errors pass through (a retry may help)."""

from __future__ import annotations

from pathlib import Path

from serving.registry.manifest import IntegrityError, LoadCheckError, RegistryError


def load_version(registry, surface: str, version: str, cache: Path, codes=None, where: str = "the features"):
    """A published version fetched (checksums verified) and loaded as the service loads it (with
    the features' `codes`); `LoadCheckError` when it is damaged or cannot load."""
    from serving.service.retriever import LoadedVersion

    try:
        local = registry.fetch(surface, version, cache)
    except RegistryError as exc:  # IntegrityError (a damaged object), a missing version
        raise LoadCheckError(f"{surface}/{version}: {exc}") from exc
    try:
        return LoadedVersion.from_local(local, codes, where)
    except Exception as exc:  # noqa: BLE001 - whatever loading raises, the version is unusable (as check_version)
        raise LoadCheckError(f"{surface}/{version} does not load: {type(exc).__name__}: {exc}") from exc


def champion_in_s3(registry, surface: str, champion: str, cache: Path) -> list[str]:
    """The champion as a new serving process would get it from S3 (fetched fresh, loaded, asked
    its known queries: `serving.service.checks.check_version`). An object that no longer matches the
    manifest is put back from this machine's verified copy (`cache`) when it has one
    (`Registry.repair`); returns the files put back. `LoadCheckError` when it cannot serve."""
    from serving.service.checks import check_version

    try:
        check_version(registry, surface, champion)
        return []
    except LoadCheckError:
        raise
    except IntegrityError as exc:
        local = cache / surface / champion
        try:
            repaired = registry.repair(surface, champion, local) if local.is_dir() else []
        except IntegrityError:
            repaired = []
        if not repaired:
            raise LoadCheckError(f"{surface}/{champion} is damaged in S3 and no intact copy is at hand: {exc}") from exc
        check_version(registry, surface, champion)
        return repaired
    except RegistryError as exc:  # a missing version
        raise LoadCheckError(f"{surface}/{champion}: {exc}") from exc
