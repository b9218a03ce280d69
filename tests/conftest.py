"""Shared pytest fixtures, and the tiers: a test that uses a server fixture (SeaweedFS through
`s3_server` / `s3_env`, the live loop) is marked `services`, as is every test of a module that
starts processes of its own (`pytestmark = pytest.mark.services`); `slow` marks in-process tests
of a minute or more. `./scripts/test.sh --fast` runs the rest (no servers, under 90 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

SERVICE_FIXTURES = {"s3_server", "s3_env", "live_loop"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real SeaweedFS S3 server (devstack.seaweedfs.SeaweedFS) for the whole test session."""
    from devstack.seaweedfs import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_env(s3_server: object) -> Iterator[object]:
    """The session's S3 server with its credentials in the environment (the resources of in-process
    runs read them from there), for one test module."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.env().items():
            mp.setenv(key, value)
        yield s3_server


@pytest.fixture(scope="session")
def live_loop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`pinrec-ops live --days 4 --warmup-days 2` on a small world (tests.helpers.LIVE_WORLD), run
    once per session as the operator runs it (its own SeaweedFS under var/, its own Dagster
    instance): tests/world/test_live.py checks the loop, tests/serving/test_security.py that no secret of the
    S3 server leaked into what the run left behind."""

    from tests.helpers import LIVE_DAYS, LIVE_WORLD, pinrec_ops

    tmp = tmp_path_factory.mktemp("live")
    proc = pinrec_ops(
        tmp / "var",
        *["live", "--days", str(len(LIVE_DAYS)), "--warmup-days", "2"],
        env={**LIVE_WORLD, "DAGSTER_HOME": str(tmp / "dagster_home")},
        training={},  # LIVE_WORLD's
        timeout=900,
    )
    data = tmp / "var" / "live"
    return {
        "tmp": tmp,
        "var": tmp / "var",
        "data": data,
        "world": data / "world",
        "stdout": proc.stdout,
        "stderr": proc.stderr,
    }
