"""PinRec: an outcome- and offset-conditioned generative retrieval model, in one file.

Shapes: B = batch, L = sequence length, d = d_model, V = number of items (ids 1..V; 0 is padding),
Q = number of queries (one per (outcome, offset) in a budget).

    token_t = MLP( item_emb(item_t) + outcome_emb(outcome_t) + surface_emb(surface_t)
                   + time_proj([sin/cos(abs time_t), log1p(gap_t)]) ) + pos_emb(t)       (B, L, d)
    h       = causal pre-LayerNorm transformer(token)                                  (B, L, d)
    q       = normalize( head(h_t, e_outcome, e_offset) )                               (..., d)
    score   = <q, normalize(item_emb(i))> / temperature                                 (..., V+1)

Incremental encoding: the causal transformer's state over the positions already encoded is each
layer's keys and values (`KVCache`). `encode(new_inputs, cache=..., return_cache=True)` encodes
only the positions that follow the cached ones (attending to the cached keys/values) and returns
the grown cache; the result equals encoding the whole sequence at once. Positions are absolute
(`pos_emb`), so a sequence whose window slides (longer than max_len) must be encoded again.

Ranking head (UniPinRec; on when `rank_outcomes` names the outcomes it predicts, else the model is
retrieval only, as every checkpoint of before). A candidate is an input token whose action part is
the mask token (`RankingHead.action_mask`): masked action modeling asks for the action of a
position from the history before it and its item, which is what ranking asks at serving time.

    c_0     = item_emb(i) + action_mask + surface_emb(s) + rank_pos                       (B, M, d)
    c_l+1   = c_l + W_o^l MHA( W_q^l LN(c_l), [k0^l; K^l_{<p}], [v0^l; V^l_{<p}] )         (B, M, d)
              K^l, V^l: the encoder's layer-l keys/values of the history (a `KVCache`),
              p: the candidate's history length (positions < p only: causal), k0/v0: a learned
              "nothing" slot, so a candidate without history attends to something
    logits  = MLP([LN(c_L), e_i]) + < U_o h_last, normalize(e_i) >  per outcome o         (B, M, K)
              h_last: the hidden state at position p - 1; U_o h_last is one vector per
              outcome and user (computed once per request), the bilinear user-item term
    p(o)    = sigmoid(logits_o), one per outcome of `rank_outcomes`

The history's keys and values are those the retrieval encode already computed (serving reuses
them: no second pass over the history); the candidates never attend to each other.

The item table doubles as the retrieval index: `item_embeddings()` is what goes into faiss. With a
catalogue (`PinRecConfig.catalogue`) `item_emb(i)` is the id embedding plus the embedding of each
of the item's catalogue fields, everywhere the item appears (input tokens, targets, the index,
the ranking head's candidates).
Switches (`PinRecConfig`): `side_inputs` (outcome/surface/time input features),
`outcome_conditioning` (off = UC: the head sees a single "any" outcome), `multi_token` (off = one
"next" query only). With all of them off (and logQ / fine-tuning off in training) this is a
SASRec-style model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from events.contract import OUTCOMES, SURFACES
from training.item_embedding import ItemEmbedding

# Target time offsets. "next": the next engaged action. Others: a window of future actions by the
# time elapsed since the current action (seconds): "session" (t+1, 30 min], excluding the next
# action itself; "day" (30 min, 1 day]; "week" (1 day, 7 days].
OFFSETS: tuple[str, ...] = ("next", "session", "day", "week")
OFFSET_HORIZON_S: tuple[float, ...] = (0.0, 30 * 60.0, 86_400.0, 7 * 86_400.0)
OFFSET_CODE: dict[str, int] = {name: i for i, name in enumerate(OFFSETS)}
ANY_OUTCOME = len(OUTCOMES)  # the built-in codes' "any outcome" head index (PinRecConfig.any_outcome)
# Periods (days) of the sinusoidal absolute-time features.
TIME_PERIODS_DAYS: tuple[float, ...] = (1.0, 7.0, 30.0, 91.0, 365.0, 1461.0)


@dataclass
class PinRecConfig:
    n_items: int  # V: item indices are 1..V, 0 is padding
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    ffn_mult: int = 4
    hash_tables: int = 0  # 0: one ID row per item; k > 0: sum of k hashed tables
    hash_buckets: int = 0  # rows per hashed table (hash_tables > 0)
    side_inputs: bool = True  # outcome, surface, time features on the input token
    outcome_conditioning: bool = True  # False = UC: the head ignores the target outcome
    multi_token: bool = True  # False = single token: only the "next" offset
    init_temperature: float = 0.05
    # the vocabulary's codes: outcome and surface names by code (embedding rows follow them)
    outcomes: tuple[str, ...] = OUTCOMES
    surfaces: tuple[str, ...] = SURFACES
    # ranking head: the outcomes it predicts (the vocabulary's engaged and negative ones, names
    # of `outcomes`); () = no ranking head (retrieval only: the configs and checkpoints of before)
    rank_outcomes: tuple[str, ...] = ()
    # exposure: a learned per-item bias added to the retrieval logits in training only. What a
    # log's next engagement is mixes how often an item is shown with how likely it is engaged
    # once shown; the bias takes the first, and serving scores <q, e_i> / T without it: P(engage |
    # shown), not exposure. False: the checkpoints of before (no such parameter).
    exposure_bias: bool = False
    # search queries the head is conditioned on (training.queries: a table learned from the log's
    # search targets; row 0 = no query); 0: none, the checkpoints of before; < 0: one row per query
    # of the training log (pretraining sets the count, as it does n_items)
    n_queries: int = 0
    # the head adds its (outcome, offset) term to the unit-normalised hidden state: with the raw
    # state (LayerNorm output, norm ~sqrt(d)) the term barely moves the query (measured: click and
    # save queries at cosine 0.997). False: the raw state, the checkpoints of before.
    unit_trunk: bool = False
    # item-side fields of the vocabulary's catalogue (events.catalogue): per field, its values in
    # code order (codes 2..; 0 padding, 1 unknown). Each gets an embedding table added to the item's
    # id embedding. (): ids only, the models of before (no such parameter, not in `to_dict`, not in
    # the repr that configuration tags hash)
    catalogue: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), repr=False)

    @property
    def ranking(self) -> bool:
        return bool(self.rank_outcomes)

    @property
    def any_outcome(self) -> int:
        """Extra head index: "any outcome" (used by UC and outcome dropout)."""
        return len(self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.catalogue:  # a model without one records what it always recorded
            del out["catalogue"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PinRecConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("outcomes", "surfaces", "rank_outcomes"):
            if key in values:
                values[key] = tuple(values[key])
        if "catalogue" in values:
            values["catalogue"] = tuple((str(name), tuple(vals)) for name, vals in values["catalogue"])
        return cls(**values)

    @property
    def offsets(self) -> tuple[str, ...]:
        return OFFSETS if self.multi_token else OFFSETS[:1]


def encode_flops(cfg: PinRecConfig, n_new: int, n_past: int = 0) -> float:
    """Model FLOPs (2 per multiply-add) of encoding `n_new` positions after `n_past` cached ones:
    the input token (time projection, token MLP), per layer the qkv/proj/FFN linears and the
    attention of each new position p over positions 0..p (scores and weighted values)."""
    d, f = cfg.d_model, cfg.ffn_mult
    token = 2 * (2 * len(TIME_PERIODS_DAYS) + 2) * d + 2 * (d * 2 * d + 2 * d * d)
    linears = 2 * (3 * d * d + d * d + 2 * f * d * d)
    attended = n_new * n_past + n_new * (n_new + 1) / 2  # sum over p of (p + 1)
    return n_new * (token + cfg.n_layers * linears) + cfg.n_layers * 4 * d * attended


def query_flops(cfg: PinRecConfig, n_queries: int) -> float:
    """Model FLOPs of the head for `n_queries` (outcome, offset) queries of one hidden state."""
    d = cfg.d_model
    return 2 * (3 * d * 2 * d + 2 * d * d) * n_queries


def rank_flops(cfg: PinRecConfig, n_candidates: int, n_history: int) -> float:
    """Model FLOPs of the ranking head for `n_candidates` of one history of `n_history` positions
    (whose keys/values exist already): per layer the query/output linears and the attention over
    the history and the "nothing" slot, the output MLP and the bilinear term (the candidate token
    is a sum; U h_last is computed once per history)."""
    d, K = cfg.d_model, len(cfg.rank_outcomes)
    per_layer = 2 * (2 * d * d) + 4 * d * (n_history + 1)
    out = 2 * (2 * d * d + d * K) + 2 * K * d
    return n_candidates * (cfg.n_layers * per_layer + out) + 2 * K * d * d  # + U h_last, once


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with 8 mask bytes per random draw (torch's CPU dropout is RNG-bound: ~10x slower)."""
    if not training or p <= 0:
        return x
    n = x.numel()
    r = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
    keep = r.view(torch.uint8)[:n].view(x.shape) >= int(round(p * 256))
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


@dataclass
class KVCache:
    """The causal state of a batch of sequences: every layer's keys and values at the positions
    already encoded. Row b holds positions 0..lengths[b]-1 (right-padded up to P = the longest).

    keys[l], values[l]: (B, H, P, d/H) per layer l; lengths: (B,) int64.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def rows(self) -> list[KVCache]:
        """One cache per sequence (B = 1), trimmed to its own length (copies, not views)."""
        out = []
        for b, n in enumerate(self.lengths.tolist()):
            out.append(
                KVCache(
                    [k[b : b + 1, :, :n].clone() for k in self.keys],
                    [v[b : b + 1, :, :n].clone() for v in self.values],
                    self.lengths[b : b + 1].clone(),
                )
            )
        return out

    @staticmethod
    def stack(rows: list[KVCache]) -> KVCache:
        """Batch single-sequence caches (B = 1 each), right-padding to the longest."""
        P = max(int(r.lengths.max()) for r in rows)

        def pad(t: torch.Tensor) -> torch.Tensor:  # (1, H, n, d/H)
            return F.pad(t, (0, 0, 0, P - t.shape[2]))  # (1, H, P, d/H)

        n_layers = len(rows[0].keys)
        return KVCache(
            [torch.cat([pad(r.keys[i]) for r in rows]) for i in range(n_layers)],
            [torch.cat([pad(r.values[i]) for r in rows]) for i in range(n_layers)],
            torch.cat([r.lengths for r in rows]),
        )


def cached_attention_mask(past_lengths: torch.Tensor, P: int, N: int) -> torch.Tensor:
    """(B,) cached positions per row, P cached slots, N new positions -> (B, 1, N, P + N) bool,
    True = may attend: new position j of row b sees cached slots < past_lengths[b] and new
    positions <= j."""
    B = past_lengths.shape[0]
    past_ok = torch.arange(P, device=past_lengths.device)[None, :] < past_lengths[:, None]  # (B, P)
    new_ok = torch.ones(N, N, dtype=torch.bool, device=past_lengths.device).tril()  # (N, N)
    return torch.cat([past_ok[:, None, :].expand(B, N, P), new_ok.expand(B, N, N)], dim=-1)[:, None]


class Block(nn.Module):
    """Pre-LayerNorm causal transformer block (fused scaled_dot_product_attention)."""

    def __init__(self, cfg: PinRecConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_mult * d), nn.GELU(), nn.Linear(cfg.ffn_mult * d, d))
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, d)
        return self.forward_kv(x)[0]

    def forward_kv(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, d) -> (out (B, N, d), k (B, H, N, d/H), v (B, H, N, d/H)): the block's output
        and the keys/values of these N positions. `past` = (keys, values, lengths) of positions
        already encoded ((B, H, P, d/H) twice, (B,)): x then holds the positions that follow them,
        which attend to the past ones too. Without `past`, x is a whole right-padded sequence."""
        B, N, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)  # 3 x (B, N, d)
        q, k, v = (t.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # is_causal: position t attends to positions <= t only. Padding sits on the right, i.e.
        # in every real position's future, so no padding mask is needed.
        # (no dropout on attention weights: it would force the unfused path). Attention runs in
        # float32 even under bf16 autocast: the CPU flash kernel's backward is ~2x faster there.
        with torch.autocast(x.device.type, enabled=False):
            if past is None:
                a = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)  # (B, H, N, d/H)
            else:
                past_k, past_v, past_len = past
                mask = cached_attention_mask(past_len, past_k.shape[2], N)  # (B, 1, N, P+N)
                a = F.scaled_dot_product_attention(
                    q.float(), torch.cat([past_k, k], 2).float(), torch.cat([past_v, v], 2).float(), attn_mask=mask
                )
        a = a.to(q.dtype)
        x = x + fast_dropout(self.proj(a.transpose(1, 2).reshape(B, N, d)), self.dropout, self.training)
        return x + fast_dropout(self.ffn(self.ln2(x)), self.dropout, self.training), k, v


class RankingHead(nn.Module):
    """Candidates cross-attend to the encoder's per-layer keys and values of their history and
    come out as one logit per outcome of `cfg.rank_outcomes` (see the module docstring). Its own
    parameters: the mask token, the candidate position, per layer a query and an output linear
    and the "nothing" key/value, the output MLP, the per-outcome user projection U, and the
    vector that stands for the last hidden state of an empty history."""

    def __init__(self, cfg: PinRecConfig):
        super().__init__()
        d, H, n = cfg.d_model, cfg.n_heads, cfg.n_layers
        self.n_heads = H
        self.action_mask = nn.Parameter(torch.randn(d) * 0.02)  # the mask token: "action unknown"
        self.position = nn.Parameter(torch.randn(d) * 0.02)  # a candidate's position: after its history
        self.no_history = nn.Parameter(torch.randn(d) * 0.02)  # h_last of an empty history
        self.ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(n))
        self.q = nn.ModuleList(nn.Linear(d, d) for _ in range(n))
        self.o = nn.ModuleList(nn.Linear(d, d) for _ in range(n))
        self.null_k = nn.Parameter(torch.randn(n, H, 1, d // H) * 0.02)
        self.null_v = nn.Parameter(torch.randn(n, H, 1, d // H) * 0.02)
        self.ln_out = nn.LayerNorm(d)
        self.out = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, len(cfg.rank_outcomes)))
        self.user = nn.Linear(d, len(cfg.rank_outcomes) * d)  # U: one user vector per outcome

    def forward(
        self,
        c: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        prefix: torch.Tensor,
        h_last: torch.Tensor,
        e_item: torch.Tensor,
    ) -> torch.Tensor:
        """c (B, M, d) candidate tokens; keys/values[l] (B, H, P, d/H) the history's; prefix
        (B, M) each candidate's history length (it sees positions < prefix); h_last (B, M, d)
        the hidden state at position prefix - 1, or (B, d) when every candidate of a row has the
        whole history (serving: U h_last once per row); e_item (B, M, d) -> logits (B, M, K)."""
        B, M, d = c.shape
        P = keys[0].shape[2]
        sees = torch.arange(P, device=c.device)[None, None, :] < prefix[..., None]  # (B, M, P)
        always = torch.ones(B, M, 1, dtype=torch.bool, device=c.device)  # the "nothing" slot
        mask = torch.cat([always, sees], dim=-1)[:, None]  # (B, 1, M, 1+P)
        if h_last.dim() == 2:  # (B, d): per row
            h_last = torch.where(prefix[:, :1] > 0, h_last, self.no_history.to(h_last.dtype))
            u = self.user(h_last).view(B, 1, -1, d).expand(B, M, -1, d)  # (B, M, K, d)
        else:
            h_last = torch.where(prefix[..., None] > 0, h_last, self.no_history.to(h_last.dtype))
            u = self.user(h_last).view(B, M, -1, d)  # (B, M, K, d)
        for i, (ln, q_proj, o_proj) in enumerate(zip(self.ln, self.q, self.o)):
            q = q_proj(ln(c)).view(B, M, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, M, d/H)
            k = torch.cat([self.null_k[i].expand(B, -1, -1, -1).to(keys[i].dtype), keys[i]], dim=2)
            v = torch.cat([self.null_v[i].expand(B, -1, -1, -1).to(values[i].dtype), values[i]], dim=2)
            with torch.autocast(c.device.type, enabled=False):  # as in Block
                a = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
            c = c + o_proj(a.to(c.dtype).transpose(1, 2).reshape(B, M, d))
        bilinear = torch.einsum("bmkd,bmd->bmk", u, F.normalize(e_item, dim=-1))  # (B, M, K)
        return self.out(torch.cat([self.ln_out(c), e_item], dim=-1)) + bilinear


class PinRec(nn.Module):
    def __init__(self, cfg: PinRecConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not a multiple of n_heads {cfg.n_heads}")
        self.cfg = cfg
        d = cfg.d_model
        self.item_emb = ItemEmbedding(cfg)
        self.outcome_emb = nn.Embedding(len(cfg.outcomes), d)
        self.surface_emb = nn.Embedding(len(cfg.surfaces), d)
        self.register_buffer("time_freq", 2 * math.pi / torch.tensor(TIME_PERIODS_DAYS), persistent=False)
        self.time_proj = nn.Linear(2 * len(TIME_PERIODS_DAYS) + 2, d)
        self.token_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        # Head: conditions on the target outcome (cfg.any_outcome = unconditioned) and offset.
        self.head_outcome = nn.Embedding(len(cfg.outcomes) + 1, d)
        self.head_offset = nn.Embedding(len(OFFSETS), d)
        self.head = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.log_temp = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        # per-item exposure logit (training only; zeros: adds no draw from the generator)
        self.exposure = nn.Parameter(torch.zeros(cfg.n_items + 1)) if cfg.exposure_bias else None
        # raw item id of each index (row 0 = padding = -1); saved with the weights for serving
        self.register_buffer("item_ids", torch.cat([torch.tensor([-1]), torch.arange(1, cfg.n_items + 1)]))
        self.apply(self._init)
        # built after the rest is initialised: a model with ranking starts from the same retrieval
        # weights as one without (same seed)
        self.ranker = RankingHead(cfg) if cfg.ranking else None
        if self.ranker is not None:
            self.ranker.apply(self._init)
        # the search query of a target (last, so a model without one starts from the same weights)
        self.search_emb = nn.Embedding(cfg.n_queries + 1, d, padding_idx=0) if cfg.n_queries > 0 else None
        if self.search_emb is not None:
            self._init(self.search_emb)
            # raw query id of each row (row 0 = no query = -1), set from the training log
            self.register_buffer("query_ids", torch.cat([torch.tensor([-1]), torch.arange(1, cfg.n_queries + 1)]))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    # ------------------------------------------------------------------ encoder
    def time_features(self, ts_days: torch.Tensor, log_gap: torch.Tensor) -> torch.Tensor:
        """(B, L) absolute time in days, (B, L) log1p(seconds since previous action; -1 = none)
        -> (B, L, 2P + 2)."""
        ang = ts_days.unsqueeze(-1) * self.time_freq  # (B, L, P)
        first = (log_gap < 0).to(ang.dtype).unsqueeze(-1)  # (B, L, 1)
        gap = log_gap.clamp_min(0).unsqueeze(-1) / 10.0  # (B, L, 1)
        return torch.cat([ang.sin(), ang.cos(), gap, first], dim=-1)

    def encode(
        self,
        items: torch.Tensor,
        outcomes: torch.Tensor | None = None,
        surfaces: torch.Tensor | None = None,
        ts_days: torch.Tensor | None = None,
        log_gap: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        return_cache: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        """(B, L) right-padded sequences -> hidden states (B, L, d). Position t sees inputs <= t.

        Incremental: with `cache`, the inputs are the positions that follow row b's
        `cache.lengths[b]` cached ones (item 0 = padding on the right), placed at absolute
        positions lengths[b] + 0..L-1, and they attend to the cached keys/values; the hidden
        states equal those of encoding the whole sequence at once. `return_cache=True` returns
        (h, KVCache of the cached and the new positions; row b grows by its count of items > 0).
        """
        B, L = items.shape
        n_new = (items > 0).sum(1) if cache is not None or return_cache else None  # (B,)
        longest = int((cache.lengths + n_new).max()) if cache is not None else L
        if longest > self.cfg.max_len:
            raise ValueError(f"sequence length {longest} > max_len {self.cfg.max_len}")
        x = self.item_emb(items)  # (B, L, d)
        if self.cfg.side_inputs:
            x = x + self.outcome_emb(outcomes) + self.surface_emb(surfaces)
            x = x + self.time_proj(self.time_features(ts_days, log_gap))
        x = x + self.token_mlp(x)
        positions = torch.arange(L, device=items.device)  # (L,)
        if cache is not None:  # (padding slots past max_len are clamped: nothing reads them)
            positions = (cache.lengths[:, None] + positions).clamp_max(self.cfg.max_len - 1)  # (B, L)
        x = fast_dropout(x + self.pos_emb(positions), self.cfg.dropout, self.training)
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            past = None if cache is None else (cache.keys[i], cache.values[i], cache.lengths)
            x, k, v = block.forward_kv(x, past)  # k, v: (B, H, L, d/H)
            new_keys.append(k)
            new_values.append(v)
        h = self.ln_f(x)
        if not return_cache:
            return h
        if cache is None:
            return h, KVCache(new_keys, new_values, n_new)
        # row b: its cached positions, then its new ones from slot lengths[b] on (scatter; the
        # padding positions land after the row's new length, where nothing reads them)
        slot = (cache.lengths[:, None] + torch.arange(L, device=items.device))[:, None, :, None]  # (B, 1, L, 1)

        def grow(past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:  # -> (B, H, P+L, d/H)
            out = torch.cat([past, torch.zeros_like(new)], dim=2)
            return out.scatter(2, slot.expand_as(new), new)

        total = cache.lengths + n_new
        P_new = int(total.max())
        return h, KVCache(
            [grow(p, k)[:, :, :P_new] for p, k in zip(cache.keys, new_keys)],
            [grow(p, v)[:, :, :P_new] for p, v in zip(cache.values, new_values)],
            total,
        )

    # ------------------------------------------------------------------ head
    def query(
        self, h: torch.Tensor, outcome: torch.Tensor, offset: torch.Tensor, search: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h (..., d), outcome (...) in [0, cfg.any_outcome], offset (...), search (...) query rows
        (0 = none; `training.queries.search_rows`) -> L2-normalised q (..., d)."""
        if not self.cfg.outcome_conditioning:
            outcome = torch.full_like(outcome, self.cfg.any_outcome)
        if search is not None and self.search_emb is not None:
            h = h + self.search_emb(search)
        z = torch.cat([h, self.head_outcome(outcome), self.head_offset(offset)], dim=-1)
        trunk = F.normalize(h, dim=-1) if self.cfg.unit_trunk else h
        return F.normalize(trunk + self.head(z), dim=-1)

    def item_embeddings(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised item vectors: all (V+1, d) with row 0 = padding, or those of `ids`."""
        if ids is None:
            ids = torch.arange(self.cfg.n_items + 1, device=self.log_temp.device)
        return F.normalize(self.item_emb(ids), dim=-1)

    def exposure_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """The training-only exposure bias of items `ids` (zeros without one); never served."""
        if self.exposure is None:
            return torch.zeros(ids.shape, device=ids.device)
        return self.exposure[ids]

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temp.exp().clamp(0.005, 1.0)

    # ------------------------------------------------------------------ ranking head
    def rank(
        self,
        cache: KVCache,
        items: torch.Tensor,
        surfaces: torch.Tensor,
        h_last: torch.Tensor,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Ranking logits (B, M, K) of candidates `items` (B, M) on `surfaces` (B, M) against
        the histories whose keys/values are `cache` (from `encode(..., return_cache=True)`,
        full or incremental). `prefix` (B, M): each candidate's history length (default: the
        whole history, cache.lengths); `h_last` (B, d) or (B, M, d): the hidden state at
        position prefix - 1 (ignored where prefix is 0). K = len(cfg.rank_outcomes)."""
        if self.ranker is None:
            raise ValueError("this model has no ranking head (PinRecConfig.rank_outcomes is empty)")
        B, M = items.shape
        if prefix is None:
            prefix = cache.lengths[:, None].expand(B, M)
        elif h_last.dim() == 2:  # candidates with histories of their own: one h_last each
            h_last = h_last[:, None, :].expand(B, M, -1)
        e = self.item_emb(items)  # (B, M, d)
        c = e + self.ranker.action_mask + self.surface_emb(surfaces) + self.ranker.position
        return self.ranker(c, cache.keys, cache.values, prefix, h_last, e)

    def rank_probabilities(
        self,
        cache: KVCache,
        items: torch.Tensor,
        surfaces: torch.Tensor,
        h_last: torch.Tensor,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sigmoid(rank(...)): (B, M, K) probability of each outcome of cfg.rank_outcomes."""
        return torch.sigmoid(self.rank(cache, items, surfaces, h_last, prefix))

    # ------------------------------------------------------------------ inference
    def last_hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden state at each sequence's last real position: (B, d)."""
        h = self.encode(
            batch["items"], batch.get("outcomes"), batch.get("surfaces"), batch.get("ts_days"), batch.get("log_gap")
        )
        last = (batch["items"] > 0).sum(1).clamp_min(1) - 1  # (B,)
        return h[torch.arange(h.shape[0], device=h.device), last]

    @torch.no_grad()
    def generate_queries(
        self,
        sequences: dict[str, torch.Tensor],
        budget: list[tuple[str, str]] | dict[tuple[str, str], Any],
        search: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """One L2-normalised query per (outcome, offset) in `budget` for each sequence.

        `budget` lists (outcome name or "any", offset name) pairs (a dict keyed by them also
        works; its values, e.g. per-query result counts, are for the caller's merge); `search`
        (B,) each sequence's search query row (`training.queries.search_rows`; None: none).
        Returns {"queries": (B, Q, d), "outcomes": [Q names], "offsets": [Q names]}.
        """
        pairs = list(budget)
        h = self.last_hidden(sequences)  # (B, d)
        oc = torch.tensor(
            [self.cfg.any_outcome if o == "any" else self.cfg.outcomes.index(o) for o, _ in pairs], device=h.device
        )
        off = torch.tensor([OFFSETS.index(f) for _, f in pairs], device=h.device)
        for _, f in pairs:
            if f not in self.cfg.offsets:
                raise ValueError(f"offset {f!r} is not one this model was trained for: {self.cfg.offsets}")
        q = self.query(
            h.unsqueeze(1).expand(-1, len(pairs), -1),
            oc.expand(h.shape[0], -1),
            off.expand(h.shape[0], -1),
            None if search is None else search[:, None].expand(-1, len(pairs)),
        )  # (B, Q, d)
        return {"queries": q, "outcomes": [o for o, _ in pairs], "offsets": [f for _, f in pairs]}

    @torch.no_grad()
    def score_all(self, sequences: dict[str, torch.Tensor], outcome: str = "any", offset: str = "next") -> torch.Tensor:
        """Scores of every item for one (outcome, offset) query: (B, V+1), column 0 = -inf."""
        q = self.generate_queries(sequences, [(outcome, offset)])["queries"][:, 0]  # (B, d)
        s = q @ self.item_embeddings().T / self.temperature
        s[:, 0] = float("-inf")
        return s
