"""A vocabulary's optional item catalogue (events.catalogue): a good one loads, relative to the
vocabulary file's folder, and travels in the vocabulary's record; a bad one is refused with what
is wrong, and the file is left as it was."""

import numpy as np
import pandas as pd
import pytest

from events.vocabulary import VocabularyError, builtin_vocabulary, load_vocabulary

SHOP = """
surfaces: [web]
outcomes: [view, purchase]
engaged: [purchase]
impression: view
repeats: true
"""


def _vocabulary(tmp_path, catalogue: str) -> object:
    path = tmp_path / "shop.yaml"
    path.write_text(SHOP + catalogue)
    return path


def _products(tmp_path, name: str = "products.parquet", **columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        columns
        or {"item_id": [1, 2, 3], "category": ["milk", "bread", None], "brand": ["x", "y", "x"], "price": [1, 2, 3]}
    )
    path = tmp_path / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return frame


def test_a_vocabulary_with_a_catalogue_loads_it_from_its_own_folder(tmp_path):
    _products(tmp_path)
    path = _vocabulary(tmp_path, "catalogue: {path: products.parquet, item: item_id, fields: [category, brand]}\n")
    vocabulary = load_vocabulary(path)
    catalogue = vocabulary.catalogue
    assert catalogue.path == (tmp_path / "products.parquet").resolve()
    assert catalogue.fields == ("category", "brand")
    assert catalogue.field_values() == (("category", ("bread", "milk")), ("brand", ("x", "y")))
    # item 3 has no category: the reserved unknown value (1); item 9 is not in the catalogue
    assert catalogue.codes_for(np.array([1, 3, 9])).tolist() == [[3, 1, 1], [2, 2, 1]]
    assert vocabulary.record()["catalogue"]["fields"] == ["category", "brand"]


def test_a_csv_catalogue_with_the_default_item_column_loads(tmp_path):
    _products(tmp_path, "products.csv")
    vocabulary = load_vocabulary(_vocabulary(tmp_path, "catalogue: {path: products.csv, fields: category}\n"))
    assert vocabulary.catalogue.item == "item_id"
    assert vocabulary.catalogue.field_values() == (("category", ("bread", "milk")),)


def test_a_vocabulary_without_a_catalogue_records_what_it_recorded_before():
    vocabulary = builtin_vocabulary("simulated")
    assert vocabulary.catalogue is None
    assert "catalogue" not in vocabulary.record()


@pytest.mark.parametrize(
    "entry, products, message",
    [
        ("{path: nowhere.parquet, fields: [category]}", None, "does not exist"),
        ("{path: products.json, fields: [category]}", None, "neither parquet nor CSV"),
        ("{path: products.parquet, fields: [colour]}", {}, "has no column ['colour']"),
        ("{path: products.parquet, item: sku, fields: [category]}", {}, "has no column ['sku']"),
        ("{path: products.parquet}", {}, "`fields` must list one or more"),
        ("{path: products.parquet, fields: [category], size: 3}", {}, "unknown keys ['size']"),
        (
            "{path: products.parquet, fields: [category]}",
            {"item_id": [1, 2, 2], "category": ["a", "b", "c"]},
            "listed more than once (first: [2])",
        ),
        (
            "{path: products.parquet, fields: [category]}",
            {"item_id": ["p1", "p2"], "category": ["a", "b"]},
            "must hold integer item ids",
        ),
        ("products.parquet", {}, "must be a mapping with `path` and `fields`"),
    ],
)
def test_a_bad_catalogue_is_refused_with_what_is_wrong(tmp_path, entry, products, message):
    if products is not None:
        _products(tmp_path, **products)
    before = (tmp_path / "products.parquet").read_bytes() if products is not None else None
    path = _vocabulary(tmp_path, f"catalogue: {entry}\n")
    with pytest.raises(VocabularyError) as refused:
        load_vocabulary(path)
    assert message in str(refused.value)
    assert str(path) in str(refused.value)  # names the vocabulary file
    if before is not None:  # the catalogue file is left as it was
        assert (tmp_path / "products.parquet").read_bytes() == before


def test_serving_reads_the_vocabulary_without_its_catalogue_file(tmp_path):
    from serving.service.cli import load_cli_vocabulary

    # the serving host has the vocabulary but not the catalogue: its versions carry their fields
    path = _vocabulary(tmp_path, "catalogue: {path: products.parquet, fields: [category]}\n")
    vocabulary = load_cli_vocabulary(["--vocabulary", str(path)])
    assert vocabulary.surfaces == ("web",) and vocabulary.catalogue is None
    with pytest.raises(VocabularyError, match="must be a mapping"):  # the entry itself is still checked
        load_cli_vocabulary(["--vocabulary", str(_vocabulary(tmp_path, "catalogue: products.parquet\n"))])
