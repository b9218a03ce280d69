"""Micro-batching: concurrent requests gathered into one batch for a worker thread.

    batcher = MicroBatcher(process, max_wait_ms=2.0, max_batch=64)
    batcher.submit(item, done)      # done(result or exception) is called from the worker thread

``process(items) -> results`` (one result per item, in order) runs on the worker thread. A
batch opens with the oldest waiting request and closes when it is full (``max_batch``), when
``max_wait_ms`` have passed since that request arrived, or earlier when no further request is
expected in time. The worker keeps averages of the gap between arrivals and of the time a batch
takes to serve, and waits for the next request only while requests arrive faster than half a
batch's service time (evidence of concurrent clients: one client that waits for each answer
never sends faster than it is served) and the gap fits in the time left. So under load a batch
takes whatever queued while the previous one ran and gathers the requests arriving together
(the batch size follows the load), a lone client is served at once, and no request is held
back for batching longer than ``max_wait_ms``. (A request can still queue behind a running
batch; that time is the ``queue`` stage the service reports, and it grows only with load.)

An exception from ``process`` is handed to every request of that batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("serving.service.batcher")

_STOP = object()


@dataclass
class Job:
    item: Any
    done: Callable[[Any], None]  # called with the result, or with the exception
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0  # when its batch began (perf_counter)
    batch_size: int = 0


class MicroBatcher:
    def __init__(
        self,
        process: Callable[[Sequence[Job]], Sequence[Any]],
        *,
        max_wait_ms: float = 2.0,
        max_batch: int = 64,
        name: str = "micro-batcher",
        gap_smoothing: float = 0.2,
    ) -> None:
        if max_wait_ms < 0 or max_batch < 1:
            raise ValueError(f"max_wait_ms must be >= 0 and max_batch >= 1, got {max_wait_ms}, {max_batch}")
        self.process = process
        self.max_wait_s = max_wait_ms / 1e3
        self.max_batch = int(max_batch)
        self.name = name
        self.gap_smoothing = gap_smoothing
        self._queue: queue.SimpleQueue[Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_arrival: float | None = None
        self._mean_gap = float("inf")  # average seconds between arrivals (inf: fewer than two)
        self._mean_service = 0.0  # average seconds a batch takes to serve (0: none yet)
        self.batches = 0
        self.jobs = 0

    # -- client side ------------------------------------------------------------------------

    def submit(self, item: Any, done: Callable[[Any], None]) -> Job:
        job = Job(item, done)
        with self._lock:
            if self._last_arrival is not None:
                gap = job.enqueued - self._last_arrival
                if self._mean_gap == float("inf"):
                    self._mean_gap = gap
                else:
                    self._mean_gap += self.gap_smoothing * (gap - self._mean_gap)
            self._last_arrival = job.enqueued
        if self._thread is None:
            self.start()
        self._queue.put(job)
        return job

    @property
    def mean_gap_s(self) -> float:
        return self._mean_gap

    # -- worker -----------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
            self._thread = None

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """The batch opened by `first`; True when the stop signal was seen."""
        batch = [first]
        deadline = first.enqueued + self.max_wait_s
        while len(batch) < self.max_batch:
            try:  # whatever is already queued, without waiting
                nxt = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.perf_counter()
                if left <= 0 or self._mean_gap > min(left, self._mean_service / 2):
                    break  # out of time, no concurrent arrivals, or none expected in time
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)  # type: ignore[arg-type]
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._gather(first)  # type: ignore[arg-type]
            started = time.perf_counter()
            for job in batch:
                job.started, job.batch_size = started, len(batch)
            try:
                results = self.process(batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"process returned {len(results)} results for {len(batch)} jobs")
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                log.exception("batch of %d failed", len(batch))
                results = [exc] * len(batch)
            took = time.perf_counter() - started
            self._mean_service += self.gap_smoothing * (took - self._mean_service)
            self.batches += 1
            self.jobs += len(batch)
            for job, result in zip(batch, results):
                try:
                    job.done(result)
                except Exception:  # noqa: BLE001 - a broken callback must not stop the worker
                    log.exception("result callback failed")
