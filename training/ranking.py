"""Training the ranking head (UniPinRec): blended examples and masked action modeling.

Blended examples. A session with impressions is a slate: the items shown in it, each with the
outcomes it got there (multi-hot over the model's `rank_outcomes`; an item shown and never
engaged is all zeros). Its history is the user's engaged events before the session's first
event. `build_slates` finds the slates of a contract frame (only a log whose vocabulary has an
impression outcome has them); `SlateSampler` attaches to every training window (a stretch of one
user's engagement sequence, `training.data.TrainWindows`) the slates whose history ends inside
that window, so one encode of the window serves the retrieval targets of its positions and the
slates at once (the candidates attend to the window's keys/values before their session only).

Masked action modeling. For some positions t of the window (`mam_fraction`), the ranking head is
asked the action of t from the history before t and t's item and surface: the candidate token's
action part is the mask token, exactly as at serving time. Every position of the sequence is an
engagement, so this trains which engaged outcome (a softmax over the engaged outcomes, which
leaves the level of the logits to the slates), not whether.

Loss (`ranking_loss`): binary cross-entropy of every slate candidate and outcome, plus
`mam_weight` x the masked action cross-entropy; the module adds `weight` x this to
`retrieval_weight` x the retrieval loss. Slates whose history lies beyond a window's inputs (a
session after the user's last engagement: that engagement is only ever a target, never an input)
are not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from events.contract import EventCodes


@dataclass
class RankingConfig:
    weight: float = 1.0  # ranking loss weight in the sum
    retrieval_weight: float = 1.0  # retrieval loss weight (0: a ranker alone, e.g. a baseline)
    mam_fraction: float = 0.25  # positions of a window whose action is masked and predicted
    mam_weight: float = 1.0  # masked action loss weight inside the ranking loss
    max_slates: int = 8  # slates per training window at most (drawn at random)
    max_slate_items: int = 32  # candidates per slate at most (engaged ones first)


def rank_outcomes_for(codes: EventCodes) -> tuple[str, ...]:
    """What a ranking head predicts for a vocabulary: its engaged and negative outcomes, in code
    order (a vocabulary without an impression outcome has no slates to train them on:
    `prepare_ranking` then trains the retrieval head only, and says so)."""
    wanted = set(codes.engaged) | set(codes.negative)
    return tuple(o for o in codes.outcomes if o in wanted)


@dataclass
class Slates:
    """Slates in CSR form: slate s shows items[ptr[s]:ptr[s+1]] (model indices) with labels
    (multi-hot over the rank outcomes); its history is the sequence tokens user_start[s] ..
    prefix[s] - 1 of `training.data.Sequences` (global token indices)."""

    user: np.ndarray  # (S,) user index in the Sequences
    prefix: np.ndarray  # (S,) global index of the first token after the history
    surface: np.ndarray  # (S,) surface code
    ptr: np.ndarray  # (S+1,)
    items: np.ndarray  # (N,) model item indices
    labels: np.ndarray  # (N, K) float32 0/1
    dropped_cold: int = 0  # sessions of users without an engagement sequence

    def __len__(self) -> int:
        return len(self.user)


def build_slates(
    events: pd.DataFrame, seqs, codes: EventCodes, rank_outcomes: Sequence[str], surface: str | None = None
) -> Slates:
    """The slates of a contract frame against `seqs` (`training.data.Sequences` built from the
    same frame): one per (user, session, surface) with at least one impression, items known to
    the sequences' vocabulary. `surface`: only that surface's sessions (fine-tuning)."""
    K = len(rank_outcomes)
    keep = events["outcome"].isin([codes.impression, *rank_outcomes])
    if surface is not None:
        keep &= events["surface"] == surface
    ev = events.loc[keep, ["user_id", "item_id", "surface", "outcome", "event_ts", "session_id"]]
    vocab = seqs.vocab
    raw = ev["item_id"].to_numpy(np.int64)
    idx = np.minimum(np.searchsorted(vocab[1:], raw) + 1, len(vocab) - 1)
    frame = pd.DataFrame(
        {
            "user": ev["user_id"].to_numpy(np.int64),
            "session": ev["session_id"].to_numpy(np.int64),
            "surface": ev["surface"].map(codes.surface_code).fillna(-1).to_numpy(np.int64),
            "item": idx,
            "ts": ev["event_ts"].to_numpy("datetime64[us]").astype(np.int64) / 1e6,
            "shown": (ev["outcome"] == codes.impression).to_numpy(),
        }
    )
    outcome = ev["outcome"].to_numpy()
    for j, o in enumerate(rank_outcomes):
        frame[j] = (outcome == o).astype(np.float32)
    frame = frame[(vocab[idx] == raw) & (frame["surface"].to_numpy() >= 0)]
    frame = frame[frame.groupby(["user", "session", "surface"])["shown"].transform("any").to_numpy(bool)]
    empty = Slates(
        *(np.zeros(0, np.int64) for _ in range(3)),
        np.zeros(1, np.int64),
        np.zeros(0, np.int64),
        np.zeros((0, K), np.float32),
    )
    if frame.empty:
        return empty
    frame["slate"] = frame.groupby(["user", "session", "surface"], sort=True).ngroup()
    per_slate = frame.groupby("slate").agg(user=("user", "first"), surface=("surface", "first"), start=("ts", "min"))
    per_item = frame.groupby(["slate", "item"], sort=True)[list(range(K))].max()
    counts = per_item.groupby(level=0).size().to_numpy()
    users = per_slate["user"].to_numpy(np.int64)
    # each slate's user in the sequences, and its history: the user's tokens before the session
    if seqs.n_users:
        u = np.minimum(np.searchsorted(seqs.user_ids, users), seqs.n_users - 1)
        known = seqs.user_ids[u] == users
    else:
        u, known = np.zeros(len(users), np.int64), np.zeros(len(users), bool)
    t0 = min(float(seqs.ts.min()) if len(seqs.ts) else 0.0, float(per_slate["start"].min())) - 1.0
    span = max(float(seqs.ts.max()) if len(seqs.ts) else 0.0, float(per_slate["start"].max())) - t0 + 2.0
    token_key = seqs.user_of_token() * span + (seqs.ts - t0)
    prefix = np.searchsorted(token_key, u * span + (per_slate["start"].to_numpy() - t0), "left")
    slates = Slates(
        u.astype(np.int64),
        prefix.astype(np.int64),
        per_slate["surface"].to_numpy(np.int64),
        np.concatenate([[0], np.cumsum(counts)]),
        per_item.index.get_level_values(1).to_numpy(np.int64),
        per_item.to_numpy(np.float32),
    )
    if not known.all():  # sessions of users with no engagement at all: no sequence, no window
        kept = _take(slates, known)
        kept.dropped_cold = int((~known).sum())
        return kept
    return slates


def _take(s: Slates, keep: np.ndarray) -> Slates:
    lens = np.diff(s.ptr)[keep]
    starts = s.ptr[:-1][keep]
    rows = np.concatenate([np.arange(a, a + n) for a, n in zip(starts, lens)]) if len(lens) else np.zeros(0, np.int64)
    return Slates(
        s.user[keep],
        s.prefix[keep],
        s.surface[keep],
        np.concatenate([[0], np.cumsum(lens)]),
        s.items[rows],
        s.labels[rows],
    )


class SlateSampler:
    """Per training window: its slates and masked-action positions, as batch tensors.

    `batch(starts, n_inputs, rng)` for windows (global start token, number of inputs) returns
    (S = most slates of a window, C = most candidates of a slate, T = most masked positions):

        slate_items (B, S, C) model indices (0 = none), slate_labels (B, S, C, K),
        slate_surface (B, S), slate_prefix (B, S) history length inside the window,
        mam_pos (B, T) window positions (-1 = none), mam_label (B, T) rank-outcome column
    """

    def __init__(
        self,
        slates: Slates,
        seqs,
        cfg: RankingConfig,
        rank_outcomes: Sequence[str],
        engaged_codes: Sequence[int],
        outcome_names: Sequence[str],
    ):
        self.slates, self.seqs, self.cfg = slates, seqs, cfg
        order = np.lexsort((slates.prefix, slates.user))
        self.order = order
        span = len(seqs.items) + 2
        self.key = slates.user[order] * span + slates.prefix[order]
        self.span = span
        self.user_of_token = seqs.user_of_token()
        col = {o: j for j, o in enumerate(rank_outcomes)}
        # outcome code -> rank column (-1: not predicted); only engaged outcomes are sequence tokens
        self.code_column = np.full(len(outcome_names), -1, np.int64)
        for code, name in enumerate(outcome_names):
            if name in col and code in set(engaged_codes):
                self.code_column[code] = col[name]
        self.engaged_columns = sorted({int(c) for c in self.code_column if c >= 0})
        self.K = len(rank_outcomes)

    def window_slates(self, start: int, n_inputs: int) -> np.ndarray:
        """Slate ids whose history ends inside the window (a user's first window also takes the
        slates with no history at all)."""
        u = int(self.user_of_token[start])
        lo = start if start == self.seqs.ptr[u] else start + 1
        a = np.searchsorted(self.key, u * self.span + lo, "left")
        b = np.searchsorted(self.key, u * self.span + start + n_inputs, "right")
        return self.order[a:b]

    def batch(self, starts: np.ndarray, n_inputs: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        s, cfg = self.slates, self.cfg
        chosen, picks = [], []
        for a, n in zip(starts.tolist(), n_inputs.tolist()):
            ids = self.window_slates(a, n)
            if len(ids) > cfg.max_slates:
                ids = rng.choice(ids, cfg.max_slates, replace=False)
            rows = []
            for sid in ids.tolist():
                r = np.arange(s.ptr[sid], s.ptr[sid + 1])
                if len(r) > cfg.max_slate_items:  # engaged first, then a random draw of the rest
                    pos = s.labels[r].any(1)
                    rnd = rng.permutation(len(r))
                    r = r[rnd[np.argsort(~pos[rnd], kind="stable")][: cfg.max_slate_items]]
                rows.append(r)
            chosen.append(ids)
            picks.append(rows)
        B = len(starts)
        S = max(1, max(len(c) for c in chosen))
        C = max([1] + [len(r) for rows in picks for r in rows])
        items = np.zeros((B, S, C), np.int64)
        labels = np.zeros((B, S, C, self.K), np.float32)
        surface = np.zeros((B, S), np.int64)
        prefix = np.zeros((B, S), np.int64)
        for b, (ids, rows) in enumerate(zip(chosen, picks)):
            for j, (sid, r) in enumerate(zip(ids.tolist(), rows)):
                items[b, j, : len(r)] = s.items[r]
                labels[b, j, : len(r)] = s.labels[r]
                surface[b, j] = s.surface[sid]
                prefix[b, j] = s.prefix[sid] - starts[b]
        # masked action positions: a share of each window's positions
        L = int(n_inputs.max())
        t = np.arange(L)[None, :]
        pick = (t < n_inputs[:, None]) & (rng.random((B, L)) < cfg.mam_fraction)
        tok = np.where(t < n_inputs[:, None], starts[:, None] + t, 0)
        column = self.code_column[self.seqs.outcomes[tok]]
        pick &= column >= 0
        T = max(1, int(pick.sum(1).max()))
        mam_pos = np.full((B, T), -1, np.int64)
        mam_label = np.full((B, T), -1, np.int64)
        for b in range(B):
            p = np.nonzero(pick[b])[0]
            mam_pos[b, : len(p)] = p
            mam_label[b, : len(p)] = column[b, p]
        return {
            "slate_items": torch.from_numpy(items),
            "slate_labels": torch.from_numpy(labels),
            "slate_surface": torch.from_numpy(surface),
            "slate_prefix": torch.from_numpy(prefix),
            "mam_pos": torch.from_numpy(mam_pos),
            "mam_label": torch.from_numpy(mam_label),
        }


def prepare_ranking(dm, events: pd.DataFrame | None, model_cfg, cfg: RankingConfig | None, surface: str | None = None):
    """(data module with its slates, model config, note) for training with the ranking head.

    The head is kept only when the model has one (`model_cfg.rank_outcomes`), the vocabulary has
    an impression outcome and the frame has slates; otherwise the model trains its retrieval head
    only (rank_outcomes = ()) and the note says why. `surface`: fine-tuning's surface."""
    from dataclasses import replace

    codes = dm.cfg.codes
    cfg = cfg or RankingConfig()
    if not model_cfg.rank_outcomes:
        return dm.with_slates(None), model_cfg, {"ranking": False, "reason": "the model has no ranking head"}
    if events is None and dm.slates is not None:  # a prepared data module brings its own slates
        return (
            dm,
            model_cfg,
            {
                "ranking": True,
                "rank_outcomes": list(model_cfg.rank_outcomes),
                "slates": len(dm.slates.slates),
                "engaged_columns": dm.slates.engaged_columns,
            },
        )
    reason = None
    if codes.impression is None:
        reason = "the vocabulary has no impression outcome: no slates, the retrieval head only"
    elif events is None:
        reason = "no event frame to find slates in: the retrieval head only"
    if reason is None:
        slates = build_slates(events, dm.train_seqs, codes, model_cfg.rank_outcomes, surface)
        if len(slates) == 0:
            reason = "the log has no sessions with impressions: no slates, the retrieval head only"
    if reason is not None:
        return dm.with_slates(None), replace(model_cfg, rank_outcomes=()), {"ranking": False, "reason": reason}
    sampler = SlateSampler(slates, dm.train_seqs, cfg, model_cfg.rank_outcomes, codes.engaged_codes, codes.outcomes)
    note = {
        "ranking": True,
        "rank_outcomes": list(model_cfg.rank_outcomes),
        "slates": len(slates),
        "slate_items": int(len(slates.items)),
        "sessions_of_users_without_history": slates.dropped_cold,
        "engaged_columns": sampler.engaged_columns,
    }
    return dm.with_slates(sampler), model_cfg, note


def _h_at(h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """h (B, L, d), prefix (B, M) -> (B, M, d): the hidden state at position prefix - 1 (row 0's
    where prefix is 0; the head replaces it by its empty-history vector)."""
    idx = (prefix - 1).clamp_min(0)
    return torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1]))


def ranking_loss(
    model, batch: dict[str, torch.Tensor], h: torch.Tensor, kv, engaged_columns: Sequence[int]
) -> dict[str, torch.Tensor]:
    """{"slate": BCE over slate candidates and outcomes, "mam": masked action cross-entropy} of a
    batch (`SlateSampler.batch` keys), from the window encode's hidden states h (B, L, d) and
    keys/values `kv` (`encode(..., return_cache=True)`). Both are 0 without any example."""
    B = h.shape[0]
    items = batch["slate_items"]  # (B, S, C)
    S, C = items.shape[1:]
    prefix = batch["slate_prefix"][:, :, None].expand(B, S, C).reshape(B, S * C)
    surfaces = batch["slate_surface"][:, :, None].expand(B, S, C).reshape(B, S * C)
    # masked actions: the item and surface of position t, its history the positions before t
    mp, ml = batch["mam_pos"], batch["mam_label"]  # (B, T)
    t = mp.clamp_min(0)
    m_items = torch.gather(batch["items"], 1, t)
    m_surf = torch.gather(batch["surfaces"], 1, t)
    all_items = torch.cat([items.reshape(B, S * C), m_items], 1)  # (B, S*C + T)
    all_prefix = torch.cat([prefix, t], 1)
    logits = model.rank(kv, all_items, torch.cat([surfaces, m_surf], 1), _h_at(h, all_prefix), all_prefix)
    zero = logits.sum() * 0.0
    s_logits = logits[:, : S * C].reshape(B, S, C, -1)
    valid = items > 0
    slate = (
        F.binary_cross_entropy_with_logits(s_logits[valid].float(), batch["slate_labels"][valid])
        if bool(valid.any())
        else zero
    )
    m_logits = logits[:, S * C :]  # (B, T, K)
    ok = ml >= 0
    mam = zero
    if bool(ok.any()) and len(engaged_columns) > 1:
        cols = torch.tensor(list(engaged_columns), device=logits.device)
        sub = m_logits[ok][:, cols].float()  # (n, E)
        target = torch.searchsorted(cols, ml[ok])
        mam = F.cross_entropy(sub, target)
    return {"slate": slate, "mam": mam}


__all__ = [
    "RankingConfig",
    "SlateSampler",
    "Slates",
    "build_slates",
    "prepare_ranking",
    "rank_outcomes_for",
    "ranking_loss",
]
