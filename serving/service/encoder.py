"""The one adapter between serving and the model code in ``training/``.

Everything serving needs from ``training.model`` goes through this module:

* :func:`build_model` / :func:`load_weights`: a ``PinRec`` from the manifest's model config and
  ``model.pt`` (``torch.load(weights_only=True)``, after the registry verified its checksum).
* :func:`item_table`: the L2-normalised item vectors (rows 1..V of ``item_embeddings()``; row 0
  is padding and is not indexed) and ``item_ids`` (index row -> contract item id, from the
  model's ``item_ids`` buffer, i.e. ``training.data`` vocabulary without its padding entry).
* :class:`Encoder`: a user's sequence in contract terms (the Feast ``user_sequence`` lists, plus
  the request's ``recent_events``) -> the model's input window (``window``: items re-indexed
  through the vocabulary, unknown items dropped, outcome / surface codes, time features computed
  as ``training.data._time_inputs`` does, the last ``max_len``) -> ``generate_queries`` for a
  budget of (outcome, offset) pairs (``queries``, one sequence, the reference path).
  ``encode_last`` does the same for a batch of windows at once and incrementally: with the
  users' ``EncoderState`` s (``serving.service.encoder_state``) it encodes only the events appended since
  a user's last request, attending to the cached keys/values (``PinRec.encode(cache=...)``), and
  nothing at all when the window is unchanged; a window that slid (the user's history is longer
  than ``max_len`` and grew) changes every absolute position, so it is encoded again in full.
  ``queries_for`` then runs the head once for every (request, outcome, offset) of the batch.
* ranking (a version with a ranking head, ``PinRecConfig.rank_outcomes``): ``encode_with_cache``
  is ``encode_last`` that also hands back every user's keys/values over the window (the cached
  state's, the grown one, or the full encode's: the retrieval encode's, never a second pass), and
  ``rank`` scores each user's candidates against them in one batched pass of the ranking head
  (``PinRec.rank_probabilities``).

Only engaged outcomes (the version's vocabulary: ``engaged_codes``, by default the built-in
data's ``events.contract.ENGAGED_OUTCOMES``) enter the model's input, as in training; every item
of the sequence (negatives and impressions included) and every item the features say was shown to
the user lately (``seq_shown_item_ids``) counts as seen: not served again, unless the version's
vocabulary says its items are engaged again (``repeats``). Outcome and surface names
map to the codes of the model (``PinRecConfig.outcomes`` / ``surfaces``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from events.contract import (
    BUILTIN_CODES,
    ENGAGED_OUTCOMES,
    OUTCOME_CODE,
    OUTCOMES,
    EventCodes,
)
from serving.service.encoder_state import EncoderState, ModelInput
from training.model import (
    OFFSETS,
    KVCache,
    PinRec,
    PinRecConfig,
    encode_flops,
    query_flops,
    rank_flops,
)
from training.queries import search_rows

ENGAGED_CODES = np.array(sorted(OUTCOME_CODE[o] for o in ENGAGED_OUTCOMES), dtype=np.int64)
DEFAULT_OUTCOME_WEIGHTS = {"click": 1.0, "save": 1.0}


@dataclass
class UserSequence:
    """A user's actions in contract terms, oldest first (parallel int64 arrays)."""

    item_ids: np.ndarray
    outcomes: np.ndarray
    surfaces: np.ndarray
    timestamps_us: np.ndarray
    # items shown to the user lately (the features' seq_shown_item_ids): seen, never model input
    shown_item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def empty(cls) -> UserSequence:
        z: np.ndarray = np.zeros(0, np.int64)
        return cls(z, z.copy(), z.copy(), z.copy())

    def seen_items(self) -> np.ndarray:
        """Sorted distinct items the user acted on or was shown (the freshness filter)."""
        return np.unique(np.concatenate([self.item_ids, self.shown_item_ids]))

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_features(cls, row: Mapping[str, Any] | None) -> UserSequence:
        """From the Feast ``user_sequence`` lists (None / missing lists: an empty sequence)."""
        if not row or row.get("seq_item_ids") is None:
            return cls.empty()
        # lists (Feast's online store) or arrays (the offline parquet tables)
        cols = [
            np.asarray(row.get(c) if row.get(c) is not None else [], dtype=np.int64)
            for c in ("seq_item_ids", "seq_outcomes", "seq_surfaces", "seq_timestamps_us")
        ]
        n = min(len(c) for c in cols)
        shown = np.asarray(row.get("seq_shown_item_ids") if row.get("seq_shown_item_ids") is not None else [], np.int64)
        return cls(*(c[-n:] if n else c[:0] for c in cols), shown_item_ids=shown)

    def extended(self, events: Sequence[Mapping[str, Any]], codes: EventCodes = BUILTIN_CODES) -> UserSequence:
        """This sequence plus ``events`` ({item_id, outcome name, surface name, timestamp_us},
        names coded by ``codes``; a name without a code there becomes -1: seen, never a model
        input), in stable time order (events older than the sequence's end are merged in)."""
        if not events:
            return self
        outcome_code, surface_code = codes.outcome_code, codes.surface_code
        items = np.array([e["item_id"] for e in events], np.int64)
        outcomes = np.array([outcome_code.get(e["outcome"], -1) for e in events], np.int64)
        surfaces = np.array([surface_code.get(e["surface"], -1) for e in events], np.int64)
        ts = np.array([e["timestamp_us"] for e in events], np.int64)
        all_ts = np.concatenate([self.timestamps_us, ts])
        order = np.argsort(all_ts, kind="stable")
        return UserSequence(
            np.concatenate([self.item_ids, items])[order],
            np.concatenate([self.outcomes, outcomes])[order],
            np.concatenate([self.surfaces, surfaces])[order],
            all_ts[order],
            self.shown_item_ids,
        )


def build_model(model_config: Mapping[str, Any]) -> PinRec:
    return PinRec(PinRecConfig.from_dict(dict(model_config))).eval()


def load_weights(model_config: Mapping[str, Any], weights_path: str) -> PinRec:
    """A PinRec from its config and a verified ``model.pt`` (state_dict, weights only)."""
    model = build_model(model_config)
    state = torch.load(weights_path, weights_only=True, map_location="cpu")
    model.load_state_dict(state)
    return model.eval()


def model_state(model: PinRec) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def model_config(model: PinRec) -> dict[str, Any]:
    return model.cfg.to_dict()


@torch.no_grad()
def item_table(model: PinRec) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (V, d) float32, item_ids (V,) int64): index row r is item ``item_ids[r]``."""
    vectors = model.item_embeddings()[1:].detach().cpu().numpy().astype(np.float32)
    ids = model.item_ids[1:].detach().cpu().numpy().astype(np.int64)
    return np.ascontiguousarray(vectors), ids


@torch.no_grad()
def item_table_ids(model: PinRec) -> np.ndarray:
    """Index row -> contract item id (the model's vocabulary without padding)."""
    return model.item_ids[1:].detach().cpu().numpy().astype(np.int64)


def model_offsets(model: PinRec) -> tuple[str, ...]:
    return tuple(model.cfg.offsets)


def check_outcomes(names: Iterable[str], known: Sequence[str] = OUTCOMES) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown outcome(s) {unknown}; known: {list(known)}")


def model_codes(model: PinRec, engaged: Sequence[str] | None = None) -> EventCodes:
    """The codes a model was trained with (its config's outcome and surface names by code) and
    its engaged outcomes (default: the built-in data's that the model has codes for)."""
    cfg = model.cfg
    if engaged is None:
        engaged = [o for o in cfg.outcomes if o in ENGAGED_OUTCOMES]
    return EventCodes(
        outcomes=tuple(cfg.outcomes),
        surfaces=tuple(cfg.surfaces),
        engaged=tuple(engaged),
        impression="impression" if "impression" in cfg.outcomes else None,
        negative=(),
    )


class Encoder:
    """Sequences -> model inputs -> one query per (outcome, offset)."""

    def __init__(self, model: PinRec, engaged_codes: Sequence[int] | None = None) -> None:
        self.model = model.eval()
        self.engaged_codes = np.asarray(ENGAGED_CODES if engaged_codes is None else sorted(engaged_codes), np.int64)
        vocab = model.item_ids.detach().cpu().numpy().astype(np.int64)
        self._raw = vocab[1:]
        self._sorter = np.argsort(self._raw, kind="stable")
        self._sorted = self._raw[self._sorter]
        self.max_len = model.cfg.max_len
        self.offsets = model_offsets(model)
        self.dim = model.cfg.d_model
        self._prior: torch.Tensor | None = None

    def to_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Contract item ids -> model indices 1..V, 0 where the item is unknown to the model."""
        if len(self._sorted) == 0 or len(item_ids) == 0:
            return np.zeros(len(item_ids), np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, item_ids), len(self._sorted) - 1)
        known = self._sorted[pos] == item_ids
        return np.where(known, self._sorter[pos] + 1, 0)

    def window(self, seq: UserSequence) -> ModelInput:
        """The model input of a sequence: engaged, known items, the last ``max_len``."""
        idx = self.to_index(seq.item_ids)
        n_surfaces = len(self.model.cfg.surfaces)  # a surface added to the ledger after training: no input
        keep = np.isin(seq.outcomes, self.engaged_codes) & (idx > 0) & (seq.surfaces >= 0) & (seq.surfaces < n_surfaces)
        items, outcomes, surfaces = idx[keep], seq.outcomes[keep], seq.surfaces[keep]
        ts = seq.timestamps_us[keep].astype(np.float64) / 1e6
        gap = np.empty_like(ts)
        if len(ts):
            gap[0] = -1.0
            gap[1:] = np.log1p(np.maximum(ts[1:] - ts[:-1], 0.0))
        sl = slice(max(0, len(items) - self.max_len), len(items))  # copies: a state keeps only its window
        return ModelInput(
            items[sl].copy(),
            outcomes[sl].copy(),
            surfaces[sl].copy(),
            (ts[sl] / 86_400.0).astype(np.float32),
            gap[sl].astype(np.float32),
        )

    @staticmethod
    def tensors(windows: Sequence[ModelInput]) -> dict[str, torch.Tensor]:
        """(B, N) right-padded model inputs of windows (padding: item 0, zero features)."""
        B, N = len(windows), max(len(w) for w in windows)
        out = {
            "items": np.zeros((B, N), np.int64),
            "outcomes": np.zeros((B, N), np.int64),
            "surfaces": np.zeros((B, N), np.int64),
            "ts_days": np.zeros((B, N), np.float32),
            "log_gap": np.zeros((B, N), np.float32),
        }
        for b, w in enumerate(windows):
            n = len(w)
            out["items"][b, :n] = w.items
            out["outcomes"][b, :n] = w.outcomes
            out["surfaces"][b, :n] = w.surfaces
            out["ts_days"][b, :n] = w.ts_days
            out["log_gap"][b, :n] = w.log_gap
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def batch(self, seq: UserSequence) -> dict[str, torch.Tensor]:
        """The (1, L) model input of a sequence: engaged, known items, the last ``max_len``."""
        w = self.window(seq)
        if len(w) == 0:  # cold user with nothing usable: the padding-only prior
            z = torch.zeros((1, 1), dtype=torch.int64)
            return {
                "items": z,
                "outcomes": z,
                "surfaces": z,
                "ts_days": torch.zeros((1, 1)),
                "log_gap": torch.full((1, 1), -1.0),
            }
        return self.tensors([w])

    def queries(self, seq: UserSequence, budget: Sequence[tuple[str, str]]) -> np.ndarray:
        """(Q, d) float32 queries, one per (outcome, offset) pair of ``budget`` (one sequence,
        encoded in full: the reference for ``encode_last`` + ``queries_for``)."""
        with torch.inference_mode():
            out = self.model.generate_queries(self.batch(seq), list(budget))
        return np.ascontiguousarray(out["queries"][0].numpy(), dtype=np.float32)

    def prior(self) -> torch.Tensor:
        """(d,) hidden state of a user with no usable history (the padding-only input)."""
        if self._prior is None:
            with torch.inference_mode():
                self._prior = self.model.last_hidden(self.batch(UserSequence.empty()))[0].clone()
        return self._prior

    def encode_last(
        self, windows: Sequence[ModelInput], states: Sequence[EncoderState | None], keep_states: bool = True
    ) -> tuple[torch.Tensor, list[EncoderState | None], list[str], list[float]]:
        """Hidden states at the last position of each window, (B, d), in one batched pass.

        ``states[b]``: the user's state from an earlier request (or None). When its window is the
        start of ``windows[b]``, only the positions after it are encoded (``extend``), or none
        (``hit``); otherwise the window is encoded in full (``full``); an empty window gets the
        model's prior (``cold``). Returns (h, the users' new states (None for cold users, or
        every one when not ``keep_states``), the kind per row, model FLOPs per row).
        """
        return self.encode_with_cache(windows, states, keep_states, need_cache=False)[:4]

    def empty_cache(self) -> KVCache:
        """The keys/values of an empty history (a cold user): zero positions in every layer."""
        cfg = self.model.cfg
        z = torch.zeros(1, cfg.n_heads, 0, cfg.d_model // cfg.n_heads)
        return KVCache([z] * cfg.n_layers, [z] * cfg.n_layers, torch.zeros(1, dtype=torch.int64))

    def encode_with_cache(
        self,
        windows: Sequence[ModelInput],
        states: Sequence[EncoderState | None],
        keep_states: bool = True,
        need_cache: bool = True,
    ) -> tuple[torch.Tensor, list[EncoderState | None], list[str], list[float], list[KVCache | None]]:
        """``encode_last``, and (``need_cache``) each user's keys/values over its whole window
        (one ``KVCache`` row each; an empty one for a cold user): what ranking reads."""
        B = len(windows)
        h = torch.empty(B, self.dim)
        new_states: list[EncoderState | None] = [None] * B
        caches: list[KVCache | None] = [None] * B
        kinds, flops = [""] * B, [0.0] * B
        full, extend = [], []
        for b, (w, st) in enumerate(zip(windows, states)):
            if len(w) == 0:
                kinds[b], h[b] = "cold", self.prior()
                if need_cache:
                    caches[b] = self.empty_cache()
            elif st is not None and w.starts_with(st.window):
                if len(w) == len(st.window):
                    kinds[b], h[b], new_states[b], caches[b] = "hit", st.last_hidden, st, st.cache
                else:
                    extend.append(b)
            else:
                full.append(b)
        cfg = self.model.cfg
        with torch.inference_mode():
            if full:
                ws = [windows[b] for b in full]
                with_cache = keep_states or need_cache
                out = self.model.encode(**self.tensors(ws), return_cache=with_cache)
                hs, kv = out if with_cache else (out, None)
                rows = kv.rows() if kv is not None else [None] * len(full)
                for j, b in enumerate(full):
                    h[b] = hs[j, len(ws[j]) - 1]
                    kinds[b], flops[b] = "full", encode_flops(cfg, len(ws[j]))
                    caches[b] = rows[j] if need_cache else None
                    if keep_states:
                        new_states[b] = EncoderState(ws[j], rows[j], h[b].clone())
            if extend:
                past = [states[b] for b in extend]  # type: ignore[misc]
                tails = [windows[b].tail(len(st.window)) for b, st in zip(extend, past)]
                cache = KVCache.stack([st.cache for st in past])
                hs, kv = self.model.encode(**self.tensors(tails), cache=cache, return_cache=True)
                rows = kv.rows()
                for j, b in enumerate(extend):
                    h[b] = hs[j, len(tails[j]) - 1]
                    kinds[b], flops[b] = "extend", encode_flops(cfg, len(tails[j]), len(past[j].window))
                    caches[b] = rows[j] if need_cache else None
                    if keep_states:
                        new_states[b] = EncoderState(windows[b], rows[j], h[b].clone())
        return h, new_states, kinds, flops, caches

    @property
    def ranks(self) -> bool:
        """Whether the model has a ranking head."""
        return self.model.ranker is not None

    @property
    def rank_outcomes(self) -> tuple[str, ...]:
        return tuple(self.model.cfg.rank_outcomes)

    def rank(
        self, caches: Sequence[KVCache], h: torch.Tensor, candidates: Sequence[np.ndarray], surface_codes: Sequence[int]
    ) -> tuple[list[np.ndarray], list[float]]:
        """Ranking-head probabilities of every user's candidates in one batched pass.

        ``caches[b]``: user b's keys/values (``encode_with_cache``), ``h`` (B, d) the hidden
        states at their last positions, ``candidates[b]`` model item indices (1..V), the
        request's surface code. Returns ((C_b, K) float32 per user, K = ``rank_outcomes``;
        model FLOPs per user)."""
        B = len(caches)
        C = max([1] + [len(c) for c in candidates])
        items = torch.zeros(B, C, dtype=torch.int64)
        for b, c in enumerate(candidates):
            items[b, : len(c)] = torch.from_numpy(np.asarray(c, np.int64))
        surfaces = torch.tensor(list(surface_codes), dtype=torch.int64)[:, None].expand(B, C)
        with torch.inference_mode():
            cache = KVCache.stack(list(caches))
            p = self.model.rank_probabilities(cache, items, surfaces, h)  # (B, C, K)
        p = p.numpy()
        lengths = cache.lengths.tolist()
        cfg = self.model.cfg
        return (
            [np.ascontiguousarray(p[b, : len(c)], dtype=np.float32) for b, c in enumerate(candidates)],
            [rank_flops(cfg, len(c), n) for c, n in zip(candidates, lengths)],
        )

    def queries_for(
        self,
        h: torch.Tensor,
        budgets: Sequence[Sequence[tuple[str, str]]],
        searches: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, float]:
        """The head for every (row b of h, (outcome, offset) of budgets[b]): (sum of |budgets|, d)
        float32 queries, row b's first, and the head's model FLOPs per query. `searches`: row b's
        search query (raw id; None: none), which a model with a search table conditions on."""
        rows = [b for b, budget in enumerate(budgets) for _ in budget]
        pairs = [p for budget in budgets for p in budget]
        cfg = self.model.cfg
        oc = torch.tensor([cfg.any_outcome if o == "any" else cfg.outcomes.index(o) for o, _ in pairs])
        off = torch.tensor([OFFSETS.index(f) for _, f in pairs])
        search = None
        if searches is not None and self.model.search_emb is not None and any(q is not None for q in searches):
            search = search_rows(self.model, list(searches))[torch.tensor(rows)]
        with torch.inference_mode():
            q = self.model.query(h[torch.tensor(rows)], oc, off, search)  # (T, d)
        return np.ascontiguousarray(q.numpy(), dtype=np.float32), query_flops(self.model.cfg, 1)

    def budget(self, outcome_weights: Mapping[str, float]) -> list[tuple[str, str]]:
        """Every (outcome with weight > 0, offset the model was trained for)."""
        return [(o, f) for o, w in outcome_weights.items() if w > 0 for f in self.offsets]


__all__ = [
    "DEFAULT_OUTCOME_WEIGHTS",
    "Encoder",
    "EncoderState",
    "ModelInput",
    "OFFSETS",
    "UserSequence",
    "build_model",
    "item_table",
    "load_weights",
    "model_config",
    "model_state",
]
