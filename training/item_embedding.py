"""The model's item vectors before normalisation: an item's id embedding (one row per item, or the
sum of k hashed tables) plus, with a catalogue (`PinRecConfig.catalogue`, from the vocabulary's
`events.catalogue`), the embedding of the item's value of each catalogue field. `PinRec.item_emb`
is this module: input tokens, targets, the ranking head's candidates and the published index all
read it (`PinRec.item_embeddings`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from events.catalogue import Catalogue


class ItemEmbedding(nn.Module):
    """ID embedding (V+1, d), or the sum of k hashed tables of `hash_buckets` rows each; plus, with
    a catalogue (`cfg.catalogue`), one embedding per field of the item's value there: the buffer
    `field_codes` (fields, V+1) holds each index's value codes (1 = unknown until set from the
    catalogue, `set_item_fields`; saved with the weights for serving)."""

    P = 2_147_483_647  # 2^31 - 1

    def __init__(self, cfg):  # a training.model.PinRecConfig
        super().__init__()
        self.k = cfg.hash_tables
        if self.k > 0:
            if cfg.hash_buckets <= 1:
                raise ValueError(f"hash_tables > 0 needs hash_buckets > 1, got {cfg.hash_buckets}")
            self.buckets = cfg.hash_buckets
            self.tables = nn.ModuleList(
                nn.Embedding(cfg.hash_buckets + 1, cfg.d_model, padding_idx=0) for _ in range(self.k)
            )
            # universal hashing: table j maps id -> 1 + ((a_j * id + b_j) mod P) mod buckets, P prime
            g = torch.Generator().manual_seed(1234)
            self.register_buffer("mult", torch.randint(1, self.P, (self.k,), generator=g), persistent=False)
            self.register_buffer("add", torch.randint(0, self.P, (self.k,), generator=g), persistent=False)
        else:
            self.table = nn.Embedding(cfg.n_items + 1, cfg.d_model, padding_idx=0)
        # rows: padding, unknown, then the field's values
        self.field_tables = nn.ModuleList(
            nn.Embedding(len(values) + 2, cfg.d_model, padding_idx=0) for _, values in cfg.catalogue
        )
        if cfg.catalogue:
            codes = torch.ones(len(cfg.catalogue), cfg.n_items + 1, dtype=torch.long)
            codes[:, 0] = 0
            self.register_buffer("field_codes", codes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) -> (..., d)
        if self.k == 0:
            out = self.table(ids)
        else:
            out = 0
            for j, table in enumerate(self.tables):
                h = torch.where(ids > 0, 1 + ((ids % self.P) * self.mult[j] + self.add[j]) % self.P % self.buckets, 0)
                out = out + table(h)
        for j, table in enumerate(self.field_tables):
            out = out + table(self.field_codes[j][ids])
        return out


def set_item_fields(model: nn.Module, catalogue: Catalogue | None, item_ids: np.ndarray) -> None:
    """Give the items of `model` (a `training.model.PinRec`; index -> item id `item_ids`, [0] =
    padding) their catalogue codes; its config must come from the same catalogue
    (`Catalogue.field_values`). None: nothing to set (no catalogue, or codes loaded with weights)."""
    if catalogue is None:
        return
    if tuple(model.cfg.catalogue) != catalogue.field_values():
        raise ValueError("the model's catalogue fields are not this catalogue's: build its config from it")
    codes = torch.from_numpy(catalogue.codes_for(np.asarray(item_ids, np.int64)))
    model.item_emb.field_codes.copy_(codes.to(model.item_emb.field_codes))
