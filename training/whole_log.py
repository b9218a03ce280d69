"""What training reads from the whole log besides the engagement sequences: the sessions' items
(training.cooccurrence: the item table's seed and the co-impression objective) and the exposure
term from impressions (training.exposure)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd
import torch

from events.contract import EventCodes
from training.cooccurrence import CoImpressions
from training.exposure import impression_log_share
from training.model import PinRecConfig
from training.module import OptimConfig

log = logging.getLogger("training.train")


def co_impressions_for(data: Any, vocab: Any, optim_cfg: OptimConfig) -> CoImpressions | None:
    """The frame's sessions when the run seeds its item table or trains the co-impression objective."""
    if not isinstance(data, pd.DataFrame) or not (optim_cfg.seed_items or optim_cfg.co_weight > 0):
        return None
    co = CoImpressions.from_events(data, vocab)
    return co if len(co) else None


def exposure_for(
    data: Any, vocab: Any, optim_cfg: OptimConfig, model_cfg: PinRecConfig, codes: EventCodes
) -> torch.Tensor | None:
    """The exposure term from the frame's impressions, when the model has one and the run asks for it."""
    if not (model_cfg.exposure_bias and optim_cfg.exposure_from_impressions and isinstance(data, pd.DataFrame)):
        return None
    share = impression_log_share(data, vocab, codes)
    if share is None:
        log.info(json.dumps({"exposure": "the log has no impressions: the exposure term is learned"}))
    return share


__all__ = ["co_impressions_for", "exposure_for"]
