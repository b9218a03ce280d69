"""How often the log showed each item: the exposure term of P(engaged) = P(shown) x P(engage | shown).

A next-engagement softmax over the catalogue learns what the log's feed showed times what users
liked of it. The model's exposure term (`PinRecConfig.exposure_bias`) is a per-item logit added in
training and dropped when serving. Learned jointly with the engagement loss it absorbs every
per-item effect, an item's general appeal included, so dropping it also drops that appeal. Taken
from the log's impressions instead (the log share of the sessions that showed the item, fixed
during training), it holds what the feed did and leaves P(engage | shown) to the user and item
vectors: what serving should rank by, and what the yardstick (`serving.evaluation.yardstick`)
measures on logged impressions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from events.contract import BUILTIN_CODES, EventCodes
from training.cooccurrence import distinct_session_items


def impression_log_share(
    events: pd.DataFrame, vocab: np.ndarray, codes: EventCodes = BUILTIN_CODES
) -> torch.Tensor | None:
    """(V+1,) centred log share of the sessions that showed each item (add-one smoothed; row 0 = 0),
    or None when the frame has no impressions (a log of engagements only has no exposure to learn
    from: the model then learns the term with the engagement loss).

    An item counts once per session that has it in any row (an impression, or an engagement: the
    item was shown). `vocab` (V+1,), [0] = -1, sorted; unknown items are dropped."""
    outcome = events["outcome"].to_numpy()
    if codes.impression is None or not (outcome == codes.impression).any():
        return None
    n_items = len(vocab) - 1
    raw = events["item_id"].to_numpy(np.int64)
    idx = np.minimum(np.searchsorted(vocab[1:], raw) + 1, max(n_items, 1))
    known = vocab[idx] == raw
    pairs = distinct_session_items(events["session_id"].to_numpy(np.int64)[known], idx[known])
    counts = np.bincount(pairs[:, 1], minlength=n_items + 1).astype(np.float64)[: n_items + 1] + 1.0
    logs = np.log(counts[1:] / counts[1:].sum())
    out = np.zeros(n_items + 1, np.float32)
    out[1:] = logs - logs.mean()
    return torch.from_numpy(out)


__all__ = ["impression_log_share"]
