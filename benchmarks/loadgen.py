"""A low-cost HTTP load generator: one process, one thread, asyncio (uvloop when installed).

    result = closed_loop("127.0.0.1", port, bodies, concurrency=8, requests=800)
    result = closed_loop(..., seconds=60, at=[(30.0, promote)])   # promote() half way, in a thread

``concurrency`` clients each keep one HTTP/1.1 keep-alive connection and send the next request
as soon as the previous answer is in (closed loop), cycling through ``bodies`` (client c sends
bodies c, c + concurrency, ...). Requests are pre-encoded bytes; a response is parsed only as
far as the status line, the headers and ``Content-Length``, so the client's own cost stays far
below the service's. ``LoadResult.cpu_s`` is this process's CPU time during the run (all
threads), and ``cpu_share`` that over the wall time (1.0 = one core busy).

A dropped connection is a failed request (``status`` 0, ``error`` set) and is reopened.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int  # 0 when the connection failed
    latency_s: float
    end_s: float  # since the start of the run
    headers: dict[str, str]  # lower-case names
    body: bytes
    error: str = ""


@dataclass
class LoadResult:
    replies: list[Reply]
    wall_s: float
    cpu_s: float
    marks: dict[str, float] = field(default_factory=dict)  # name -> seconds since start

    @property
    def cpu_share(self) -> float:
        """This process's CPU time over the wall time (1.0 = one core)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def qps(self) -> float:
        return len(self.replies) / self.wall_s if self.wall_s > 0 else float("nan")


def request_bytes(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.head: tuple[int, dict[str, str], int] | None = None  # status, headers, body start
        self.length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, data: bytes) -> asyncio.Future:
        self.buffer.clear()
        self.head = None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                self.waiter.set_exception(ValueError("response without Content-Length"))  # type: ignore[union-attr]
                return
            self.head = (status, headers, end + 4)
            self.length = int(headers["content-length"])
        status, headers, start = self.head
        if len(self.buffer) - start >= self.length and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, headers, bytes(self.buffer[start : start + self.length])))


async def _closed_loop(
    host: str,
    port: int,
    requests_data: Sequence[bytes],
    concurrency: int,
    n_requests: int | None,
    seconds: float | None,
    at: Sequence[tuple[float, Callable[[], Any]]],
    timeout: float,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    replies: list[Reply] = []
    marks: dict[str, float] = {}
    sent = 0
    start = time.perf_counter()
    stop_at = start + seconds if seconds is not None else float("inf")

    async def connect() -> _Connection:
        _, proto = await loop.create_connection(_Connection, host, port)
        return proto

    async def client(c: int) -> None:
        nonlocal sent
        conn = await connect()
        i = c
        while time.perf_counter() < stop_at:
            if n_requests is not None:
                if sent >= n_requests:
                    break
                sent += 1
            data = requests_data[i % len(requests_data)]
            i += concurrency
            t = time.perf_counter()
            try:
                status, headers, body = await asyncio.wait_for(conn.send(data), timeout)
                end = time.perf_counter()
                replies.append(Reply(status, end - t, end - start, headers, body))
            except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
                end = time.perf_counter()
                replies.append(Reply(0, end - t, end - start, {}, b"", f"{type(exc).__name__}: {exc}"))
                if conn.transport is not None:
                    conn.transport.close()
                conn = await connect()
        if conn.transport is not None:
            conn.transport.close()

    async def scheduled(delay: float, fn: Callable[[], Any]) -> None:
        await asyncio.sleep(delay)
        marks[getattr(fn, "__name__", "mark")] = time.perf_counter() - start
        await loop.run_in_executor(None, fn)

    cpu0 = time.process_time()
    extra = [asyncio.ensure_future(scheduled(d, fn)) for d, fn in at]
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    await asyncio.gather(*extra)
    return LoadResult(replies, wall, cpu, marks)


def closed_loop(
    host: str,
    port: int,
    bodies: Sequence[bytes],
    concurrency: int,
    *,
    requests: int | None = None,
    seconds: float | None = None,
    at: Sequence[tuple[float, Callable[[], Any]]] = (),
    path: str = "/v1/retrieve",
    timeout: float = 60.0,
) -> LoadResult:
    """Run ``concurrency`` closed-loop clients until ``requests`` are answered in all, or for
    ``seconds``; ``at``: (seconds after the start, fn) pairs, each fn run once in a thread."""
    if (requests is None) == (seconds is None):
        raise ValueError("give requests or seconds")
    data = [request_bytes(path, b, host) for b in bodies]
    runner = _runner()
    return runner(_closed_loop(host, port, data, concurrency, requests, seconds, at, timeout))


def _runner() -> Callable[[Any], LoadResult]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return lambda coro: uvloop.run(coro)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def server_timing(reply: Reply) -> dict[str, float]:
    """The Server-Timing header as {stage: milliseconds}."""
    out = {}
    for part in reply.headers.get("server-timing", "").split(","):
        name, sep, dur = part.partition(";dur=")
        if sep:
            out[name.strip()] = float(dur)
    return out
