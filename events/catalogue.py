"""A deployment's item catalogue: categorical fields per item (category, brand, ...), named by the
optional `catalogue:` entry of its vocabulary (`events.vocabulary`):

    catalogue:
      path: products.parquet   # parquet or CSV; a relative path is the vocabulary file's folder's
      item: item_id            # optional: the item id column (default item_id), integer ids
      fields: [category, brand]

The model gives each field a small embedding table; an item's vector is its id embedding plus its
fields' embeddings (`training.item_embedding`), so items the log barely engaged with sit near
the items that share their fields. Each field's values (code order) travel in the model's config
and the items' codes in its weights: serving never reads this file.

Codes per field: 0 is padding (no item), 1 the reserved "unknown" value (an item missing from the
catalogue, or without a value for the field), 2.. the field's distinct values in sorted order.

A catalogue that cannot be used is refused when the vocabulary loads, with what is wrong: a
missing or unreadable file, an unknown format, missing columns, item ids that are not integers,
an item listed twice. Nothing of it is dropped or changed silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KEYS = ("path", "item", "fields")
FORMATS = (".parquet", ".csv")
PADDING, UNKNOWN = 0, 1  # codes of every field; a field's values start at 2
FIRST_VALUE = 2


class CatalogueError(ValueError):
    """A catalogue entry or file that cannot be used; says what is wrong and where."""


@dataclass(frozen=True, eq=False)
class Catalogue:
    path: Path
    item: str  # the item id column
    fields: tuple[str, ...]
    items: np.ndarray  # (n,) int64 item ids, one per row, each once
    values: Mapping[str, np.ndarray]  # field -> (n,) value per row as a string; None where missing
    sha256: str  # of the file's bytes

    def field_values(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Per field, its distinct values in code order (code 2 + position): what the model's
        config records (`PinRecConfig.catalogue`)."""
        return tuple((f, tuple(sorted({v for v in self.values[f] if v is not None}))) for f in self.fields)

    def codes_for(self, item_ids: np.ndarray) -> np.ndarray:
        """(fields, len(item_ids)) int64 codes of `item_ids` (a model's index -> item id):
        UNKNOWN for an item not in the catalogue or without a value, PADDING for ids < 0."""
        item_ids = np.asarray(item_ids, np.int64)
        order = np.argsort(self.items, kind="stable")
        sorted_items = self.items[order]
        pos = np.minimum(np.searchsorted(sorted_items, item_ids), max(len(sorted_items) - 1, 0))
        found = (sorted_items[pos] == item_ids) if len(sorted_items) else np.zeros(len(item_ids), bool)
        row = order[pos] if len(sorted_items) else pos
        out = np.full((len(self.fields), len(item_ids)), UNKNOWN, np.int64)
        for j, (name, values) in enumerate(self.field_values()):
            code = {v: FIRST_VALUE + i for i, v in enumerate(values)}
            per_row = np.array([code.get(v, UNKNOWN) for v in self.values[name]], np.int64)
            out[j, found] = per_row[row[found]]
        out[:, item_ids < 0] = PADDING
        return out

    def record(self) -> dict[str, Any]:
        """What a vocabulary's record says of the catalogue."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "item": self.item,
            "fields": list(self.fields),
            "items": int(len(self.items)),
        }


def parse_catalogue(label: str, raw: Any, folder: Path, *, read: bool = True) -> Catalogue | None:
    """The `catalogue:` entry of the vocabulary `label` (a mapping of `path`, `item`, `fields`),
    its file read and checked; a relative path is taken from `folder`. `read=False` (serving,
    whose models carry their fields): the entry is checked, the file not read, None returned."""
    where = f"vocabulary {label}: `catalogue`"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where} must be a mapping with `path` and `fields`, got {raw!r}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {unknown}; known: {list(KEYS)}")
    if not isinstance(raw.get("path"), str) or not raw["path"]:
        raise CatalogueError(f"{where}: `path` must name a parquet or CSV file, got {raw.get('path')!r}")
    item = raw.get("item", "item_id")
    fields = raw.get("fields")
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(item, str) or not item:
        raise CatalogueError(f"{where}: `item` must name the item id column, got {item!r}")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields):
        raise CatalogueError(f"{where}: `fields` must list one or more categorical columns, got {fields!r}")
    twice = sorted({f for f in fields if fields.count(f) > 1})
    if twice or item in fields:
        raise CatalogueError(f"{where}: `fields` names {twice or [item]} twice (or the item column)")
    path = Path(raw["path"])
    path = (path if path.is_absolute() else Path(folder) / path).resolve()
    return read_catalogue(path, item, tuple(fields), where) if read else None


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def read_catalogue(path: Path, item: str, fields: tuple[str, ...], where: str = "catalogue") -> Catalogue:
    """The catalogue in `path` (parquet or CSV): its `item` column and `fields`, checked."""
    if path.suffix.lower() not in FORMATS:
        raise CatalogueError(f"{where}: {path} is neither parquet nor CSV (expected a name ending in {FORMATS})")
    if not path.is_file():
        raise CatalogueError(f"{where}: the file {path} does not exist")
    try:
        columns = _columns(path)
        missing = [c for c in (item, *fields) if c not in columns]
        if missing:
            raise CatalogueError(f"{where}: {path} has no column {missing} (its columns: {columns})")
        wanted = [item, *fields]
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path, columns=wanted)
        else:
            frame = pd.read_csv(path, usecols=wanted, dtype={f: str for f in fields})
    except CatalogueError:
        raise
    except Exception as exc:  # an unreadable file: say so, with the reader's words
        raise CatalogueError(f"{where}: cannot read {path}: {exc}") from None
    ids = pd.to_numeric(frame[item], errors="coerce")
    bad = frame.loc[ids.isna() | (ids != ids.round()), item]
    if len(bad):
        raise CatalogueError(
            f"{where}: {path}: column {item!r} must hold integer item ids; {len(bad)} rows do not "
            f"(first: {bad.head(5).tolist()})"
        )
    items = ids.to_numpy().astype(np.int64)
    uniq, counts = np.unique(items, return_counts=True)
    if (counts > 1).any():
        twice = uniq[counts > 1]
        raise CatalogueError(
            f"{where}: {path}: {len(twice)} item ids are listed more than once (first: {twice[:5].tolist()}); "
            "an item has one row"
        )
    values = {f: np.array([None if pd.isna(v) else str(v) for v in frame[f]], dtype=object) for f in fields}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Catalogue(path=path, item=item, fields=fields, items=items, values=values, sha256=digest)
