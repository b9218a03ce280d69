"""Pointer files (champion.json, canary.json) against a real SeaweedFS: every update is a
conditional write (If-Match on the ETag that was read, If-None-Match for a new pointer) with a
bounded retry that re-reads, so racing promotions all land in the rollback history, in order,
and a delete never removes a pointer someone else just wrote."""

import threading
import uuid

import pytest

from serving.registry.publish import publish_model
from serving.service.checks import checked_registry
from storage.s3 import put_bytes
from tests.helpers import tiny_model


class HeldWrites:
    """A boto3 client whose writes to one key wait until released: the first `hold` writes to
    `key` (put or delete) block until every one of them has arrived (so each writer has already
    read the pointer), then go one at a time in the order `release_order` names (by thread name).
    Everything else goes straight to the real client."""

    def __init__(self, client, key: str, release_order: list[str]):
        self._client, self._key, self._order = client, key, list(release_order)
        self._arrived: set[str] = set()
        self._done: list[str] = []
        self._cond = threading.Condition()
        self.attempts: list[str] = []  # thread name per write that reached the server

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _held(self, call, kwargs):
        me = threading.current_thread().name
        held = kwargs.get("Key") == self._key and me in self._order and me not in self._arrived
        if not held:
            if kwargs.get("Key") == self._key:
                self.attempts.append(me)
            return call(**kwargs)
        with self._cond:
            self._arrived.add(me)
            self._cond.notify_all()
            turn = self._order.index(me)
            ok = self._cond.wait_for(
                lambda: self._arrived == set(self._order) and self._done == self._order[:turn], timeout=30
            )
            assert ok, f"{me} was never released ({self._arrived}, {self._done})"
        try:
            self.attempts.append(me)
            return call(**kwargs)
        finally:
            with self._cond:
                self._done.append(me)
                self._cond.notify_all()

    def put_object(self, **kwargs):
        return self._held(self._client.put_object, kwargs)

    def delete_object(self, **kwargs):
        return self._held(self._client.delete_object, kwargs)


@pytest.fixture(scope="module")
def versions(s3_server):
    """Four loadable published versions of homefeed under one prefix."""
    registry = checked_registry(s3_server.settings().with_prefix(f"ptr-{uuid.uuid4().hex[:8]}"))
    return registry, [publish_model(registry, "homefeed", tiny_model(seed=s))[0] for s in range(4)]


@pytest.fixture
def fresh(versions):
    """The same versions with the pointers cleared before each test."""
    registry, vs = versions
    for role in ("champion", "canary"):
        registry.client.delete_object(Bucket=registry.bucket, Key=registry.pointer_key("homefeed", role))
    return registry, vs


def _run(*targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn), name=name) for name, fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_conditional_put_and_delete_are_honoured_by_the_server(s3_server):
    from storage.s3 import delete_if_match, get_with_etag, put_conditional

    client = checked_registry(s3_server.settings()).client
    bucket, key = s3_server.bucket, f"tests/cond-{uuid.uuid4().hex[:8]}"
    first = put_conditional(client, bucket, key, b"one", if_match=None)  # create only if absent
    assert first and put_conditional(client, bucket, key, b"again", if_match=None) is None
    second = put_conditional(client, bucket, key, b"two", if_match=first)
    assert second and second != first
    assert put_conditional(client, bucket, key, b"stale", if_match=first) is None  # 412
    assert get_with_etag(client, bucket, key) == (b"two", second)
    assert delete_if_match(client, bucket, key, first) is False  # stale: nothing deleted
    assert get_with_etag(client, bucket, key)[0] == b"two"
    assert delete_if_match(client, bucket, key, second) is True
    with pytest.raises(LookupError):
        get_with_etag(client, bucket, key)


def test_two_promotions_held_between_read_and_write_both_land_in_order(fresh):
    registry, (v0, v1, v2, _) = fresh
    registry.promote("homefeed", v0)
    held = HeldWrites(registry.client, registry.pointer_key("homefeed", "champion"), ["first", "second"])
    racing = checked_registry(registry.settings, client=held)
    _run(("first", lambda: racing.promote("homefeed", v1)), ("second", lambda: racing.promote("homefeed", v2)))
    pointer = registry.read_pointer("homefeed", "champion")
    assert pointer["version"] == v2
    assert pointer["previous"] == [v1, v0]  # neither promotion lost, newest first
    assert held.attempts.count("second") == 2  # refused once (stale ETag), then re-read and rewritten
    registry.rollback("homefeed")
    assert registry.champion("homefeed") == v1


def test_a_rollback_racing_a_promotion_loses_neither(fresh):
    registry, (v0, v1, v2, _) = fresh
    registry.promote("homefeed", v0)
    registry.promote("homefeed", v1)
    held = HeldWrites(registry.client, registry.pointer_key("homefeed", "champion"), ["promote", "rollback"])
    racing = checked_registry(registry.settings, client=held)
    _run(("promote", lambda: racing.promote("homefeed", v2)), ("rollback", lambda: racing.rollback("homefeed")))
    pointer = registry.read_pointer("homefeed", "champion")
    # the rollback re-read after the promotion landed: it rolled back v2, to v1
    assert pointer["version"] == v1 and pointer["rolled_back_from"] == v2
    assert pointer["previous"] == [v0]


def test_clearing_a_canary_never_deletes_a_newer_canary(fresh):
    """Promoting the canary's version clears canary.json, but only the canary it read: a canary
    set by someone else in between stays."""
    registry, (v0, v1, _, v3) = fresh
    registry.promote("homefeed", v0)
    registry.set_canary("homefeed", v1, 0.1)
    canary_key = registry.pointer_key("homefeed", "canary")
    held = HeldWrites(registry.client, canary_key, ["operator", "promotion"])
    racing = checked_registry(registry.settings, client=held)
    _run(
        ("promotion", lambda: racing.promote("homefeed", v1)),
        ("operator", lambda: racing.set_canary("homefeed", v3, 0.2)),
    )
    assert registry.champion("homefeed") == v1
    assert registry.canary("homefeed") == (v3, 0.2)


def test_a_pointer_that_keeps_changing_fails_after_bounded_retries(fresh):
    """Every write refused (another writer always got there first): the update gives up with
    PointerConflictError after its bounded attempts instead of looping or overwriting."""
    from serving.registry.manifest import PointerConflictError

    registry, (v0, v1, _, _) = fresh
    registry.promote("homefeed", v0)
    key = registry.pointer_key("homefeed", "champion")

    class AlwaysRaced:
        def __init__(self, client):
            self._client, self.puts = client, 0

        def __getattr__(self, name):
            return getattr(self._client, name)

        def put_object(self, **kwargs):
            if kwargs.get("Key") == key:  # another writer changes the pointer just before ours
                self.puts += 1
                put_bytes(
                    self._client,
                    registry.bucket,
                    key,
                    registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read() + b" ",
                )
            return self._client.put_object(**kwargs)

    raced = AlwaysRaced(registry.client)
    with pytest.raises(PointerConflictError, match="champion.json of homefeed"):
        checked_registry(registry.settings, client=raced).promote("homefeed", v1)
    assert 2 <= raced.puts <= 10
    assert registry.champion("homefeed") == v0
