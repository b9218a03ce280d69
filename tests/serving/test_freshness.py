"""Freshness: what the features say was shown to a user lately is not served again, unless the
version's vocabulary says its items are engaged again (groceries)."""

import torch

from events.contract import OUTCOME_CODE
from serving.registry.index import build_tuned_index
from serving.service import encoder as enc
from serving.service.retriever import LoadedVersion
from tests.helpers import tiny_model

T_US = 1_767_000_000_000_000


def _loaded(repeats: bool | None) -> LoadedVersion:
    model = tiny_model()
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    files = {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}
    vocabulary = {} if repeats is None else {"vocabulary": {"repeats": repeats}}
    return LoadedVersion("homefeed", "v1", {"files": files, "config": vocabulary}, model, index, ids)


def _row(shown: list[int]) -> dict:
    return {
        "seq_item_ids": [1001, 1002],
        "seq_outcomes": [OUTCOME_CODE["click"]] * 2,
        "seq_surfaces": [0, 0],
        "seq_timestamps_us": [T_US, T_US + 1],
        "seq_shown_item_ids": shown,
        "seq_length": 2,
    }


def test_an_item_shown_lately_is_not_served_again():
    loaded = _loaded(repeats=None)
    first = [c.item for c in loaded.retrieve(enc.UserSequence.from_features(_row([])), 20).candidates]
    shown = first[:5]
    again = [c.item for c in loaded.retrieve(enc.UserSequence.from_features(_row(shown)), 20).candidates]
    assert len(again) == 20 and not set(again) & set(shown)
    assert again[:15] == first[5:]  # the rest keep their order: only the shown items went


def test_a_vocabulary_with_repeats_serves_what_was_shown_and_engaged():
    loaded = _loaded(repeats=True)
    plain = [c.item for c in loaded.retrieve(enc.UserSequence.from_features(_row([])), 300).candidates]
    shown = plain[:5]
    served = [c.item for c in loaded.retrieve(enc.UserSequence.from_features(_row(shown)), 300).candidates]
    assert set(shown) <= set(served) and {1001, 1002} <= set(served)


def test_the_shown_items_are_seen_but_never_model_input():
    seq = enc.UserSequence.from_features(_row([1005, 1006]))
    assert list(seq.seen_items()) == [1001, 1002, 1005, 1006]
    extended = seq.extended([{"item_id": 1007, "outcome": "click", "surface": "homefeed", "timestamp_us": T_US + 5}])
    assert list(extended.shown_item_ids) == [1005, 1006] and len(extended) == 3
    encoder = _loaded(repeats=None).encoder
    assert torch.equal(encoder.batch(seq)["items"], encoder.batch(enc.UserSequence.from_features(_row([])))["items"])
