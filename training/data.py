"""Training examples from the event contract: user sequences, targets, batches, DataModule.

Sequences are built from contract frames (`events.contract`): each user's engaged events
(the vocabulary's engaged outcomes, `DataConfig.codes`; default the built-in data's), all
surfaces, in stable timestamp order. Items are re-indexed 1..V
(0 = padding) through a vocabulary of raw item ids.

Batches. A user's history is cut into windows of at most `max_len + 1` tokens (inputs = the
first `max_len`, every input position is a training position). Windows are grouped into
batches of similar length (length bucketing) and cut to the longest window in the batch, so
little compute goes to padding. Padding is on the right: every real position's padding lies in
its future, which the causal mask already hides.

Distributed training (DDP). `DataConfig.batch_size` is the GLOBAL batch: the batch plan is the
same on every process, and process `rank` of `world_size` takes every `world_size`-th window of
each planned batch (`TrainWindows.shard`), so one optimiser step consumes the same windows as a
single process at the same batch size and seed, each process gets `batch_size / world_size` of
them (the batch size must be divisible by the world size), and the shards are disjoint and
cover the epoch. Validation users are split into one contiguous block per process
(`eval_batches(users=...)`); the module gathers every block's ranks before computing metrics.

Targets. For input position t and each trained offset (`training.model.OFFSETS`), a target j is
drawn from the offset's window of the user's later engaged actions (by time elapsed since t;
"next" is j = t + 1), the head is conditioned on j's real outcome and the offset, and the
positive set is j plus up to `n_positives - 1` other items in the same window with the same
outcome (window relaxation). Targets are read from the whole (training) sequence of the user,
so windows near a cut still see their future.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from events.contract import BUILTIN_CODES, EventCodes
from training.cooccurrence import distinct_session_items, session_item_keys
from training.model import OFFSET_HORIZON_S, OFFSETS
from training.queries import build_query_vocab, frame_query_rows

# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------


@dataclass
class Sequences:
    """Per-user token sequences in CSR form (tokens of user u: ptr[u]..ptr[u+1])."""

    vocab: np.ndarray  # (V+1,) raw item id of each index; vocab[0] = -1 (padding)
    user_ids: np.ndarray  # (U,)
    ptr: np.ndarray  # (U+1,)
    items: np.ndarray  # (N,) item index 1..V
    outcomes: np.ndarray  # (N,) outcome code
    surfaces: np.ndarray  # (N,) surface code
    ts: np.ndarray  # (N,) seconds since epoch (float64)
    # hard negatives per token: impressed-but-not-engaged items of the token's session
    hard_ptr: np.ndarray | None = None  # (N+1,)
    hard_items: np.ndarray | None = None
    # search query of each token: a row of `query_vocab` (0: none; training.queries)
    queries: np.ndarray | None = None  # (N,)
    query_vocab: np.ndarray | None = None  # (Q+1,) raw query id of each row; [0] = -1

    @property
    def n_queries(self) -> int:
        return 0 if self.query_vocab is None else len(self.query_vocab) - 1

    @property
    def n_items(self) -> int:
        return len(self.vocab) - 1

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.ptr)

    def user_of_token(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_users), self.lengths)

    def take(self, keep: np.ndarray) -> Sequences:
        """Sub-sequences of the tokens where boolean `keep` (N,) is true (users with none dropped)."""
        uid = self.user_of_token()[keep]
        counts = np.bincount(uid, minlength=self.n_users)
        users = counts > 0
        ptr = np.concatenate([[0], np.cumsum(counts[users])])
        hp = hi = None
        if self.hard_ptr is not None:
            lens = np.diff(self.hard_ptr)[keep]
            starts = self.hard_ptr[:-1][keep]
            hp = np.concatenate([[0], np.cumsum(lens)])
            hi = self.hard_items[_ranges(starts, lens)] if lens.sum() else np.zeros(0, np.int64)
        return Sequences(
            self.vocab,
            self.user_ids[users],
            ptr,
            self.items[keep],
            self.outcomes[keep],
            self.surfaces[keep],
            self.ts[keep],
            hp,
            hi,
            None if self.queries is None else self.queries[keep],
            self.query_vocab,
        )

    def drop_last(self, n: int) -> Sequences:
        """Each user's sequence without its last `n` tokens."""
        pos_from_end = np.repeat(self.ptr[1:], self.lengths) - np.arange(len(self.items))  # 1 = last
        return self.take(pos_from_end > n)


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l)."""
    if len(lens) == 0:
        return np.zeros(0, np.int64)
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return rep + np.arange(lens.sum())


def build_vocab(events: pd.DataFrame) -> np.ndarray:
    """Item vocabulary from every item in `events` (impressions included): (V+1,), [0] = -1."""
    return np.concatenate([[-1], np.unique(events["item_id"].to_numpy(np.int64))])


def build_sequences(
    events: pd.DataFrame,
    vocab: np.ndarray | None = None,
    hard_negatives: bool = False,
    codes: EventCodes = BUILTIN_CODES,
    query_vocab: np.ndarray | None = None,
) -> Sequences:
    """Engagement sequences from a contract frame, outcomes and surfaces coded by `codes`.

    Users are sorted by id; each user's events by event_ts with a stable sort (ties keep frame
    order). Items missing from `vocab` are dropped. With `hard_negatives`, each engaged token
    gets the items impressed in its session that were never engaged there (none when the
    vocabulary has no impression outcome). Each token keeps its search query, a row of
    `query_vocab` (default: the frame's queries; `training.queries`).
    """
    if vocab is None:
        vocab = build_vocab(events)
    if query_vocab is None:
        query_vocab = build_query_vocab(events)
    item_raw = events["item_id"].to_numpy(np.int64)
    idx = np.searchsorted(vocab[1:], item_raw) + 1
    idx = np.minimum(idx, len(vocab) - 1)
    known = vocab[idx] == item_raw
    outcome = events["outcome"].map(codes.outcome_code).fillna(-1).to_numpy(np.int64)  # -1: no code
    surface = events["surface"].map(codes.surface_code).fillna(-1).to_numpy(np.int64)
    ts = events["event_ts"].to_numpy("datetime64[us]").astype(np.int64) / 1e6
    user = events["user_id"].to_numpy(np.int64)
    session = events["session_id"].to_numpy(np.int64)
    engaged = np.isin(outcome, codes.engaged_codes) & known & (surface >= 0)
    order = np.lexsort((np.arange(len(events)), ts, user))
    order = order[engaged[order]]
    users, counts = np.unique(user[order], return_counts=True)
    seqs = Sequences(
        vocab, users, np.concatenate([[0], np.cumsum(counts)]), idx[order], outcome[order], surface[order], ts[order]
    )
    seqs.queries, seqs.query_vocab = frame_query_rows(events, query_vocab)[order], query_vocab
    if hard_negatives:
        # per session: impressed items never engaged in that session
        imp = (outcome == codes.impression_code) & known
        key = session_item_keys(session, idx)[0]
        not_eng = ~pd.Series(key[imp]).isin(key[engaged]).to_numpy()
        negatives = distinct_session_items(session[imp][not_eng], idx[imp][not_eng])  # sorted by session, item
        s_neg, i_neg = negatives[:, 0], negatives[:, 1]
        tok_sess = session[order]
        lo = np.searchsorted(s_neg, tok_sess, "left")
        hi = np.searchsorted(s_neg, tok_sess, "right")
        lens = hi - lo
        seqs.hard_ptr = np.concatenate([[0], np.cumsum(lens)])
        seqs.hard_items = i_neg[_ranges(lo, lens)]
    return seqs


@dataclass
class EvalSet:
    """Prefix sequences with one held-out target each (the public protocol)."""

    prefixes: Sequences
    targets: np.ndarray  # (U,) item index
    target_outcomes: np.ndarray  # (U,)


def leave_one_out(seqs: Sequences, min_train: int = 1) -> tuple[Sequences, EvalSet, EvalSet]:
    """(train, valid, test): last item = test, second-to-last = validation, the rest = train.

    Only users with at least `min_train + 2` tokens are evaluated.
    """
    ok = seqs.lengths >= min_train + 2
    ev = seqs.take(np.repeat(ok, seqs.lengths))
    last = ev.ptr[1:] - 1
    test = EvalSet(ev.drop_last(1), ev.items[last], ev.outcomes[last])
    valid = EvalSet(ev.drop_last(2), ev.items[last - 1], ev.outcomes[last - 1])
    return seqs.drop_last(2), valid, test


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    max_len: int = 200
    batch_size: int = 128  # global batch (all processes together; see DDP above)
    seed: int = 0
    offsets: tuple[str, ...] = ("next",)  # trained offsets (model.cfg.offsets)
    n_positives: int = 4  # window relaxation: positive-set size per target
    p_any_outcome: float = 0.0  # prob. a target is conditioned on "any outcome"
    outcome_conditioning: bool = True  # False: every target is "any outcome" (UC)
    target_surface: str | None = None  # fine-tuning: only targets on this surface
    n_hard: int = 0  # hard negatives per target (fine-tuning)
    eval_batch_size: int = 512
    codes: EventCodes = BUILTIN_CODES  # the vocabulary's codes (synced with the model's)
    # share of targets trained without their search query (the same targets every epoch): a
    # search request without one (a client that sends none, the canary's per-user lists) is
    # answered from the history alone as well as before the query table existed
    query_dropout: float = 0.5


def _token_share(idx: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per global token index (a multiplicative hash: no
    draw from the batch's generator, so the other targets stay as they were)."""
    h = (np.asarray(idx).astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    return (h >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def _time_inputs(seqs: Sequences, idx: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute time in days and log1p(gap to the previous action in s; -1 for the first)."""
    g = np.where(valid, idx, 0)
    ts = seqs.ts[g]
    first = np.isin(g, seqs.ptr[:-1])
    prev = seqs.ts[np.maximum(g - 1, 0)]
    log_gap = np.where(first, -1.0, np.log1p(np.maximum(ts - prev, 0.0)))
    return (np.where(valid, ts / 86_400.0, 0.0).astype(np.float32), np.where(valid, log_gap, 0.0).astype(np.float32))


def input_batch(seqs: Sequences, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """Inputs for global token indices `idx` (B, L), -1 = padding."""
    valid = idx >= 0
    g = np.where(valid, idx, 0)
    ts_days, log_gap = _time_inputs(seqs, idx, valid)
    return {
        "items": torch.from_numpy(np.where(valid, seqs.items[g], 0)),
        "outcomes": torch.from_numpy(np.where(valid, seqs.outcomes[g], 0)),
        "surfaces": torch.from_numpy(np.where(valid, seqs.surfaces[g], 0)),
        "ts_days": torch.from_numpy(ts_days),
        "log_gap": torch.from_numpy(log_gap),
    }


def last_window_index(seqs: Sequences, max_len: int, users: np.ndarray | None = None) -> np.ndarray:
    """(U, L) global token indices of each user's last `max_len` tokens, right-padded with -1."""
    users = np.arange(seqs.n_users) if users is None else users
    ends = seqs.ptr[users + 1]
    lens = np.minimum(ends - seqs.ptr[users], max_len)
    L = max(int(lens.max()) if len(lens) else 1, 1)
    t = np.arange(L)[None, :]
    idx = (ends - lens)[:, None] + t
    return np.where(t < lens[:, None], idx, -1)


class TrainWindows(Dataset):
    """One epoch of length-bucketed training batches; item i is batch i (a dict of tensors).

    Batch plans and target sampling are seeded by (seed, epoch, batch): call `set_epoch`.
    """

    def __init__(self, seqs: Sequences, cfg: DataConfig, slates=None):
        self.seqs, self.cfg = seqs, cfg
        self.slates = slates  # training.ranking.SlateSampler: each window's slates (ranking head)
        self.rank, self.world_size = 0, 1
        starts, ends = [], []
        for u in range(seqs.n_users):
            a0, b = int(seqs.ptr[u]), int(seqs.ptr[u + 1])
            while b - a0 >= 2:  # a window needs an input and a target
                a = max(a0, b - cfg.max_len - 1)
                starts.append(a)
                ends.append(b)
                b = a + 1  # next window's last target is token a
        self.starts = np.array(starts, np.int64)
        self.n_inputs = np.array(ends, np.int64) - self.starts - 1
        self.user_end = np.repeat(seqs.ptr[1:], seqs.lengths)
        # time key: sorted within a user, users far apart (window search with one searchsorted)
        uid = seqs.user_of_token().astype(np.float64)
        t0 = seqs.ts.min() if len(seqs.ts) else 0.0
        span = (seqs.ts.max() - t0 if len(seqs.ts) else 0.0) + 2 * max(OFFSET_HORIZON_S) + 1
        self.key = uid * span + (seqs.ts - t0)
        self.offset_codes = [OFFSETS.index(o) for o in cfg.offsets]
        self.epoch = 0
        self._plan()

    @property
    def n_tokens(self) -> int:
        return int(self.n_inputs.sum())

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._plan()

    def shard(self, rank: int, world_size: int) -> None:
        """Serve process `rank`'s share of every batch: windows rank, rank + world_size, ... of it."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if self.cfg.batch_size % world_size:
            raise ValueError(
                f"batch_size {self.cfg.batch_size} (the global batch) is not divisible by the world size {world_size}"
            )
        if len(self.starts) < world_size:
            raise ValueError(f"{len(self.starts)} training windows cannot be shared by {world_size} processes")
        if (rank, world_size) != (self.rank, self.world_size):
            self.rank, self.world_size = rank, world_size
            self._plan()

    def _plan(self) -> None:
        rng = np.random.default_rng([self.cfg.seed, self.epoch, 0])
        n, B = len(self.starts), self.cfg.batch_size
        perm = rng.permutation(n)
        # sort by length inside mega-batches of 64 batches: similar lengths, still shuffled
        mega = 64 * B
        order = (
            np.concatenate(
                [p[np.argsort(-self.n_inputs[p], kind="stable")] for p in np.array_split(perm, max(1, -(-n // mega)))]
            )
            if n
            else perm
        )
        batches = [order[i : i + B] for i in range(0, n, B)]
        if len(batches) > 1 and len(batches[-1]) < self.world_size:  # every process needs a window
            batches[-2:] = [np.concatenate(batches[-2:])]
        self.batches = [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """This process's part of planned batch i (the whole batch in a single process)."""
        part = i * self.world_size + self.rank
        rng = np.random.default_rng([self.cfg.seed, self.epoch, 1, part])
        w = self.batches[i][self.rank :: self.world_size]
        return self.make_batch(self.starts[w], self.n_inputs[w], rng)

    def make_batch(self, starts: np.ndarray, n_inputs: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        s, cfg = self.seqs, self.cfg
        L = int(n_inputs.max())
        t = np.arange(L)[None, :]
        valid = t < n_inputs[:, None]
        idx = np.where(valid, starts[:, None] + t, -1)  # (B, L)
        batch = input_batch(s, idx)
        g = np.where(valid, idx, 0)
        end = self.user_end[g]  # (B, L) user's end
        K, H = cfg.n_positives, cfg.n_hard
        any_outcome = len(cfg.codes.outcomes)  # the head's "any" index
        tv, to, pid, pm, hid, hm, tq = [], [], [], [], [], [], []
        for code in self.offset_codes:
            if code == 0:
                lo, hi = g + 1, g + 2
            else:
                lo = np.searchsorted(self.key, self.key[g] + OFFSET_HORIZON_S[code - 1], "right")
                lo = np.maximum(lo, g + 2)
                hi = np.searchsorted(self.key, self.key[g] + OFFSET_HORIZON_S[code], "right")
            hi = np.minimum(hi, end)
            ok = valid & (hi > lo)
            j = lo + (rng.random(g.shape) * np.maximum(hi - lo, 1)).astype(np.int64)
            j = np.where(ok, j, 0)
            oc = s.outcomes[j]
            if not cfg.outcome_conditioning:
                oc = np.full_like(oc, any_outcome)
            elif cfg.p_any_outcome > 0:
                oc = np.where(rng.random(g.shape) < cfg.p_any_outcome, any_outcome, oc)
            if cfg.target_surface is not None:
                ok &= s.surfaces[j] == cfg.codes.surface_code[cfg.target_surface]
            # positive set: j, then the first K-1 other window items with the same outcome
            p = lo[..., None] + np.arange(K - 1)  # (B, L, K-1)
            pc = np.minimum(p, len(s.items) - 1)
            pok = (p < hi[..., None]) & (p != j[..., None]) & ok[..., None]
            pok &= (oc[..., None] == any_outcome) | (s.outcomes[pc] == oc[..., None])
            pos = np.concatenate([s.items[j][..., None], np.where(pok, s.items[pc], 0)], -1)
            pmask = np.concatenate([ok[..., None], pok], -1)
            tv.append(ok), to.append(oc), pid.append(pos), pm.append(pmask)
            tq.append((ok, j))
            if H > 0:
                if s.hard_ptr is None:
                    raise ValueError("n_hard > 0 needs sequences built with hard_negatives=True")
                h0, hn = s.hard_ptr[j], s.hard_ptr[j + 1] - s.hard_ptr[j]
                # H random picks (with replacement) among the session's hard negatives
                r = (rng.random(g.shape + (H,)) * np.maximum(hn, 1)[..., None]).astype(np.int64)
                hix = np.minimum(h0[..., None] + r, max(len(s.hard_items) - 1, 0))
                hok = np.broadcast_to((hn[..., None] > 0) & ok[..., None], hix.shape).copy()
                hitems = s.hard_items[hix] if len(s.hard_items) else np.zeros(hix.shape, np.int64)
                hid.append(np.where(hok, hitems, 0)), hm.append(hok)
        batch["tgt_valid"] = torch.from_numpy(np.stack(tv, -1))  # (B, L, O)
        batch["tgt_outcome"] = torch.from_numpy(np.stack(to, -1))  # (B, L, O)
        batch["tgt_offset"] = torch.tensor(self.offset_codes).expand(*valid.shape, -1).clone()
        if s.queries is not None:  # each target's search query (0: none; `query_dropout` of them dropped)
            rows = [np.where(ok & (_token_share(j) >= cfg.query_dropout), s.queries[j], 0) for ok, j in tq]
            batch["tgt_query"] = torch.from_numpy(np.stack(rows, -1))
        batch["pos_ids"] = torch.from_numpy(np.stack(pid, 2))  # (B, L, O, K)
        batch["pos_mask"] = torch.from_numpy(np.stack(pm, 2))
        if H > 0:
            batch["hard_ids"] = torch.from_numpy(np.stack(hid, 2))  # (B, L, O, H)
            batch["hard_mask"] = torch.from_numpy(np.stack(hm, 2))
        if self.slates is not None:  # drawn after the retrieval targets: those stay as they were
            batch.update(self.slates.batch(starts, n_inputs, rng))
        return batch


class _EpochSampler(Sampler[int]):
    """Yields batch indices in order; forwards Lightning's `set_epoch` to the dataset."""

    def __init__(self, ds: TrainWindows):
        self.ds = ds

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __iter__(self):
        return iter(range(len(self.ds)))

    def __len__(self) -> int:
        return len(self.ds)


def eval_batches(ev: EvalSet, max_len: int, batch_size: int = 512, users: np.ndarray | None = None):
    """(inputs, targets, seen) batches for `training.metrics.evaluate_public`.

    inputs: the last `max_len` tokens of each prefix; seen: the whole prefix (padded with -1).
    `users`: evaluate only these users (indices into the evaluation set; default all).
    """
    p = ev.prefixes
    all_users = np.arange(p.n_users) if users is None else np.asarray(users, np.int64)
    for a in range(0, len(all_users), batch_size):
        users = all_users[a : a + batch_size]
        idx = last_window_index(p, max_len, users)
        lens = p.lengths[users]
        t = np.arange(int(lens.max()))[None, :]
        seen = np.where(t < lens[:, None], p.items[np.minimum(p.ptr[users][:, None] + t, len(p.items) - 1)], -1)
        yield input_batch(p, idx), torch.from_numpy(ev.targets[users]), torch.from_numpy(seen)


def item_log_popularity(seqs: Sequences) -> torch.Tensor:
    """(V+1,) log of each item's share of training tokens (add-one smoothed)."""
    counts = np.bincount(seqs.items, minlength=seqs.n_items + 1).astype(np.float64) + 1.0
    counts[0] = 1e-12
    return torch.from_numpy(np.log(counts / counts.sum())).float()


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------


class PinRecDataModule(pl.LightningDataModule):
    """Training batches (and optional validation batches) from `Sequences`.

    Build it from a contract frame with `from_events`, or from a contract parquet file with
    `from_parquet`. `split="leave_one_out"` holds out each user's last two actions.
    """

    def __init__(
        self, train: Sequences, cfg: DataConfig, valid: EvalSet | None = None, test: EvalSet | None = None, slates=None
    ):
        super().__init__()
        self.train_seqs, self.cfg, self.valid, self.test = train, cfg, valid, test
        self.slates = slates  # training.ranking.SlateSampler (ranking head), or None
        self.train_ds: TrainWindows | None = None

    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        cfg: DataConfig,
        split: str = "none",
        vocab: np.ndarray | None = None,
        hard_negatives: bool = False,
    ) -> PinRecDataModule:
        seqs = build_sequences(events, vocab, hard_negatives=hard_negatives, codes=cfg.codes)
        if split == "leave_one_out":
            train, valid, test = leave_one_out(seqs)
            return cls(train, cfg, valid, test)
        if split != "none":
            raise ValueError(f"split must be 'none' or 'leave_one_out', got {split!r}")
        return cls(seqs, cfg)

    @classmethod
    def from_parquet(cls, path: str | Path, cfg: DataConfig, **kw) -> PinRecDataModule:
        return cls.from_events(pd.read_parquet(path), cfg, **kw)

    @property
    def n_items(self) -> int:
        return self.train_seqs.n_items

    def with_config(self, **changes) -> PinRecDataModule:
        return PinRecDataModule(self.train_seqs, replace(self.cfg, **changes), self.valid, self.test, self.slates)

    def with_slates(self, slates) -> PinRecDataModule:
        """This module with a `training.ranking.SlateSampler` (or None)."""
        return PinRecDataModule(self.train_seqs, self.cfg, self.valid, self.test, slates)

    def rank_and_world_size(self) -> tuple[int, int]:
        """(global rank, world size) of the trainer this module is attached to; (0, 1) without one."""
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is None:
            self.train_ds = TrainWindows(self.train_seqs, self.cfg, self.slates)
        self.train_ds.shard(*self.rank_and_world_size())

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.train_ds, batch_size=None, sampler=_EpochSampler(self.train_ds), num_workers=0)

    def val_dataloader(self):
        if self.valid is None:
            return []
        return DataLoader(_EvalList(self.valid, self.cfg, *self.rank_and_world_size()), batch_size=None, num_workers=0)


class _EvalList(Dataset):
    """Evaluation batches of process `rank`'s contiguous block of users."""

    def __init__(self, ev: EvalSet, cfg: DataConfig, rank: int = 0, world_size: int = 1):
        if ev.prefixes.n_users < world_size:
            raise ValueError(f"{ev.prefixes.n_users} validation users cannot be shared by {world_size} processes")
        users = np.array_split(np.arange(ev.prefixes.n_users), world_size)[rank]
        self.items = list(eval_batches(ev, cfg.max_len, cfg.eval_batch_size, users))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


__all__ = [
    "DataConfig",
    "EvalSet",
    "PinRecDataModule",
    "Sequences",
    "TrainWindows",
    "build_sequences",
    "build_vocab",
    "eval_batches",
    "input_batch",
    "item_log_popularity",
    "last_window_index",
    "leave_one_out",
]
