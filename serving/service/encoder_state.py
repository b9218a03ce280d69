"""Per-user encoder states: what the causal transformer already computed over a user's history.

A state (``EncoderState``) is the model input window a user's last request was encoded with
(``ModelInput``: item indices, outcome / surface codes, time features), every layer's keys and
values over it (``training.model.KVCache``, one row) and the hidden state at its last position.
``serving.service.encoder.Encoder.encode_last`` looks a user's state up, encodes only the positions
appended since (or nothing, when the window is unchanged), and stores the grown state back.

``EncoderStateCache`` holds the states of the users served lately, keyed by (the loaded
version's ``state_key``, unique per load, and the user id), least recently used first out,
bounded by bytes (the keys/values dominate: 2 x n_layers x L x d float32, about 200 KB for a
200-event window of a d=64, 2-layer model). A version swap retires the replaced version's key
(``retire``): its states are dropped and a request still finishing on it cannot store new ones.
The version in the key also means a state is never used by another model. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from training.model import KVCache

ENCODE_KINDS = ("cold", "hit", "extend", "full")  # how a request's user state was obtained


@dataclass(frozen=True)
class ModelInput:
    """One user's model input window, oldest first: the engaged events the model knows, at most
    ``max_len``, with the features ``training.data`` computes (the gap of the window's first
    event is to the event before the window, as in training)."""

    items: np.ndarray  # (n,) int64 model item indices 1..V
    outcomes: np.ndarray  # (n,) int64 outcome codes
    surfaces: np.ndarray  # (n,) int64 surface codes
    ts_days: np.ndarray  # (n,) float32 days since the epoch
    log_gap: np.ndarray  # (n,) float32 log1p(seconds since the previous event); -1 = first

    def __len__(self) -> int:
        return len(self.items)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.items, self.outcomes, self.surfaces, self.ts_days, self.log_gap))

    def starts_with(self, prefix: ModelInput) -> bool:
        """True when ``prefix`` is this window's first ``len(prefix)`` positions, feature for feature."""
        n = len(prefix)
        if n > len(self):
            return False
        return all(
            np.array_equal(a[:n], b)
            for a, b in (
                (self.items, prefix.items),
                (self.outcomes, prefix.outcomes),
                (self.surfaces, prefix.surfaces),
                (self.ts_days, prefix.ts_days),
                (self.log_gap, prefix.log_gap),
            )
        )

    def tail(self, start: int) -> ModelInput:
        return ModelInput(
            self.items[start:], self.outcomes[start:], self.surfaces[start:], self.ts_days[start:], self.log_gap[start:]
        )


@dataclass(frozen=True)
class EncoderState:
    window: ModelInput
    cache: KVCache  # one row: keys/values of every layer over `window`
    last_hidden: torch.Tensor  # (d,) hidden state at the window's last position

    @property
    def nbytes(self) -> int:
        return self.window.nbytes + self.cache.nbytes + self.last_hidden.numel() * 4


class EncoderStateCache:
    """LRU of ``EncoderState`` by (version key, user id), at most ``max_bytes`` in all (0: off)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._states: OrderedDict[tuple[str, int], EncoderState] = OrderedDict()
        self._bytes = 0
        self._retired: set[str] = set()
        self._lock = threading.Lock()
        self.kinds: Counter[str] = Counter()  # requests by ENCODE_KINDS
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, version_key: str, user_id: int) -> EncoderState | None:
        with self._lock:
            state = self._states.get((version_key, user_id))
            if state is not None:
                self._states.move_to_end((version_key, user_id))
            return state

    def put(self, version_key: str, user_id: int, state: EncoderState) -> None:
        size = state.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            if version_key in self._retired:
                return
            old = self._states.pop((version_key, user_id), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._states[(version_key, user_id)] = state
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._states.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def count(self, kinds: Iterable[str]) -> None:
        with self._lock:
            self.kinds.update(kinds)

    def versions(self) -> set[str]:
        with self._lock:
            return {v for v, _ in self._states}

    def retire(self, versions: Iterable[str]) -> int:
        """Forget every state of these version keys and store none again; returns how many
        states were dropped."""
        drop = set(versions)
        with self._lock:
            self._retired |= drop
            keys = [key for key in self._states if key[0] in drop]
            for key in keys:
                self._bytes -= self._states.pop(key).nbytes
        return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._bytes = 0
