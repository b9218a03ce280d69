"""A deployment's vocabulary: which surfaces and outcomes its event log has, and what each outcome
means. One YAML file per deployment (`PINREC_VOCABULARY`, `--vocabulary FILE`); the simulated
world and MovieLens ship theirs in `events/vocabularies/`.

    surfaces: [web, app]                  # where events happen; one fine-tuned model each
    outcomes: [view, cart, purchase, return]
    engaged: [cart, purchase]             # positives: model input, training targets, recall, drift
    impression: view                      # optional: marks an impression (not followed by an
                                          #   engagement in its session: a hard negative)
    negative: [return]                    # optional: outcomes that mean "not this"
    weights: {cart: 1, purchase: 2}       # optional: default outcome weights of retrieval
    surface_weights: {app: {purchase: 1}} # optional: per surface, overriding `weights`
    guarded: [purchase]                   # optional: outcomes whose recall the canary gate guards
    drift: [cart, purchase, return]       # optional: outcomes whose mix the drift sensor compares
    repeats: false                        # optional: true when items are engaged again (groceries):
                                          #   the service then serves items the user was shown or
                                          #   engaged before (default: it does not)
    codes:                                # optional: pinned codes (names in code order)
      outcomes: [view, cart, purchase, return]
      surfaces: [web, app]
    catalogue:                            # optional: item-side fields (events.catalogue)
      path: products.parquet              #   parquet or CSV; relative to this file's folder
      item: item_id                       #   optional: the item id column (default item_id)
      fields: [category, brand]           #   categorical columns: one embedding table each

Catalogue. With a `catalogue`, each item's vector is its id embedding plus one embedding per
field value (an item missing from the file, or without a value, gets the field's reserved
"unknown" value), so items few users engaged with sit near the items that share their fields. The
file is read and checked when the vocabulary loads (a missing file, missing columns, non-integer
or duplicate item ids are refused with the reason); the fields' values travel with every trained
model (its config and weights), so serving does not read the file (`load_vocabulary(...,
read_catalogue=False)`). Without it nothing changes.

Codes. Feature tables and models store outcomes and surfaces as integer codes, so a code must
never change meaning. The codes are a ledger recorded with the data (`codes.json` in the Feast
data directory, `feature_pipeline.store.CODES_FILE`): the first run gives every name the next
free code in the file's order (after the pinned `codes`, if any); a name added to the file later
gets the next free code; a name removed from the file keeps its code (its rows are then
quarantined, and its feature columns stay, empty). So reordering or extending the file never
renumbers anything, and a file whose pinned codes disagree with the ledger is refused. Every
feature table and published manifest records the mapping; serving refuses a version whose
mapping disagrees with the features it reads.

Names are lower-case identifiers (`[a-z][a-z0-9_]*`): they become Feast columns, Dagster groups
and S3 keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from events.catalogue import Catalogue, CatalogueError, parse_catalogue
from events.contract import EventCodes, event_schema

VOCABULARY_DIR = Path(__file__).resolve().parent / "vocabularies"
# The vocabulary a source uses when none is chosen; a parquet log's: the project's own events
# (the contract before vocabularies), so a log of your own needs --vocabulary.
DEFAULT_FILES = {
    "simulated": VOCABULARY_DIR / "simulated.yaml",
    "movielens-1m": VOCABULARY_DIR / "movielens.yaml",
    "movielens-100k": VOCABULARY_DIR / "movielens.yaml",
    "parquet": VOCABULARY_DIR / "pinrec.yaml",
}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
FIELDS = (
    "surfaces",
    "outcomes",
    "engaged",
    "impression",
    "negative",
    "weights",
    "surface_weights",
    "guarded",
    "drift",
    "repeats",
    "codes",
    "catalogue",
)
# item_stats columns that are not per-outcome counts: an outcome family may not take their names
RESERVED_COLUMNS = {"item_id", "engagements", "first_seen_us", "event_timestamp"}


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used, or codes that would change meaning; names the file."""


@dataclass(frozen=True)
class Vocabulary:
    path: Path | None
    surfaces: tuple[str, ...]
    outcomes: tuple[str, ...]
    engaged: tuple[str, ...]
    impression: str | None
    negative: tuple[str, ...]
    weights: Mapping[str, float]
    surface_weights: Mapping[str, Mapping[str, float]]
    guarded: tuple[str, ...]
    drift: tuple[str, ...]
    codes: EventCodes  # every name with a code (the ledger), declared or retired
    sha256: str = field(default="")
    repeats: bool = False  # items are engaged again: serving does not filter what was seen
    catalogue: Catalogue | None = None  # item-side fields (events.catalogue); None: ids only

    @property
    def label(self) -> str:
        """How messages name the vocabulary: its file."""
        return str(self.path) if self.path else "<built-in vocabulary>"

    def event_schema(self):
        """The pandera contract with this vocabulary's surfaces and outcomes; a value outside
        them is quarantined with a reason naming the file."""
        return event_schema(self.surfaces, self.outcomes, self.label)

    def weights_for(self, surface: str) -> dict[str, float]:
        """Default outcome weights of retrieval on `surface`."""
        return dict(self.surface_weights.get(surface) or self.weights)

    def record(self) -> dict[str, Any]:
        """What a manifest or a feature table records of the vocabulary."""
        return {
            "file": self.label,
            "sha256": self.sha256,
            **self.codes.mapping(),
            "engaged": list(self.engaged),
            "impression": self.impression,
            "negative": list(self.negative),
            "repeats": self.repeats,
            "declared": {"surfaces": list(self.surfaces), "outcomes": list(self.outcomes)},
            **({"catalogue": self.catalogue.record()} if self.catalogue else {}),
        }


def _names(path: str, key: str, value: Any, *, required: bool = False) -> tuple[str, ...]:
    if value is None:
        if required:
            raise VocabularyError(f"vocabulary {path}: `{key}` is missing (a list of names)")
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VocabularyError(f"vocabulary {path}: `{key}` must be a list of names, got {value!r}")
    bad = [v for v in value if not NAME_RE.fullmatch(v)]
    if bad:
        raise VocabularyError(f"vocabulary {path}: `{key}` has invalid names {bad} (expected {NAME_RE.pattern})")
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise VocabularyError(f"vocabulary {path}: `{key}` names {twice} twice")
    if required and not value:
        raise VocabularyError(f"vocabulary {path}: `{key}` is empty")
    return tuple(value)


def _subset(path: str, key: str, names: tuple[str, ...], of: tuple[str, ...], what: str) -> None:
    unknown = [n for n in names if n not in of]
    if unknown:
        raise VocabularyError(f"vocabulary {path}: `{key}` names {unknown}, which are not {what} {list(of)}")


def _weights(path: str, key: str, value: Any, engaged: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise VocabularyError(f"vocabulary {path}: `{key}` must map outcomes to weights, got {value!r}")
    _subset(path, key, tuple(value), engaged, "engaged outcomes")
    out = {}
    for outcome, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise VocabularyError(
                f"vocabulary {path}: `{key}`: weight of {outcome} must be a number >= 0, got {weight!r}"
            )
        out[outcome] = float(weight)
    if not any(w > 0 for w in out.values()):
        raise VocabularyError(f"vocabulary {path}: `{key}`: at least one weight must be > 0")
    return out


def _ledger_codes(
    path: str,
    kind: str,
    declared: tuple[str, ...],
    pinned: tuple[str, ...],
    ledger: tuple[str, ...],
    ledger_path: Path | None,
) -> tuple[str, ...]:
    """Names in code order: the recorded ledger, the file's pinned codes (which must agree with
    it), then every declared name without a code, in the file's order."""
    for i, (a, b) in enumerate(zip(ledger, pinned)):
        if a != b:
            raise VocabularyError(
                f"vocabulary {path}: `codes.{kind}` gives code {i} to {b!r}, but the code ledger {ledger_path} "
                f"recorded it for {a!r}: codes never change meaning once data is recorded with them"
            )
    codes = list(ledger if len(ledger) >= len(pinned) else pinned)
    codes += [name for name in declared if name not in codes]
    return tuple(codes)


def read_ledger(ledger_path: Path | None) -> dict[str, tuple[str, ...]]:
    """The code ledger recorded with the data ({"outcomes": names by code, "surfaces": ...})."""
    if ledger_path is None or not Path(ledger_path).exists():
        return {"outcomes": (), "surfaces": ()}
    data = json.loads(Path(ledger_path).read_text())
    return {"outcomes": tuple(data.get("outcomes", ())), "surfaces": tuple(data.get("surfaces", ()))}


def parse_vocabulary(
    text: str, path: Path | str | None, ledger_path: Path | None = None, *, read_catalogue: bool = True
) -> Vocabulary:
    label = str(path) if path else "<inline>"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VocabularyError(f"vocabulary {label} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise VocabularyError(f"vocabulary {label} must be a mapping with `surfaces`, `outcomes` and `engaged`")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise VocabularyError(f"vocabulary {label}: unknown fields {unknown}; known: {list(FIELDS)}")
    surfaces = _names(label, "surfaces", raw.get("surfaces"), required=True)
    outcomes = _names(label, "outcomes", raw.get("outcomes"), required=True)
    engaged = _names(label, "engaged", raw.get("engaged"), required=True)
    _subset(label, "engaged", engaged, outcomes, "outcomes")
    impression = raw.get("impression")
    if impression is not None:
        if not isinstance(impression, str) or impression not in outcomes:
            raise VocabularyError(
                f"vocabulary {label}: `impression` must be one of the outcomes {list(outcomes)}, got {impression!r}"
            )
        if impression in engaged:
            raise VocabularyError(f"vocabulary {label}: the impression outcome {impression!r} cannot be engaged")
    negative = _names(label, "negative", raw.get("negative"))
    _subset(label, "negative", negative, outcomes, "outcomes")
    both = sorted(set(negative) & (set(engaged) | {impression}))
    if both:
        raise VocabularyError(f"vocabulary {label}: {both} cannot be negative and engaged (or the impression)")
    weights = (
        _weights(label, "weights", raw["weights"], engaged)
        if raw.get("weights") is not None
        else {o: 1.0 for o in engaged}
    )
    surface_weights = raw.get("surface_weights") or {}
    if not isinstance(surface_weights, dict):
        raise VocabularyError(f"vocabulary {label}: `surface_weights` must map surfaces to weight maps")
    _subset(label, "surface_weights", tuple(surface_weights), surfaces, "surfaces")
    surface_weights = {s: _weights(label, f"surface_weights.{s}", w, engaged) for s, w in surface_weights.items()}
    guarded = _names(label, "guarded", raw["guarded"]) if "guarded" in raw else engaged
    _subset(label, "guarded", guarded, engaged, "engaged outcomes")
    drift = _names(label, "drift", raw["drift"]) if "drift" in raw else tuple(o for o in outcomes if o != impression)
    _subset(label, "drift", drift, outcomes, "outcomes")
    pinned = raw.get("codes") or {}
    if not isinstance(pinned, dict) or set(pinned) - {"outcomes", "surfaces"}:
        raise VocabularyError(
            f"vocabulary {label}: `codes` must map `outcomes` and/or `surfaces` to names in code order"
        )
    ledger = read_ledger(ledger_path)
    codes = EventCodes(
        outcomes=_ledger_codes(
            label,
            "outcomes",
            outcomes,
            _names(label, "codes.outcomes", pinned.get("outcomes")),
            ledger["outcomes"],
            ledger_path,
        ),
        surfaces=_ledger_codes(
            label,
            "surfaces",
            surfaces,
            _names(label, "codes.surfaces", pinned.get("surfaces")),
            ledger["surfaces"],
            ledger_path,
        ),
        engaged=engaged,
        impression=impression,
        negative=negative,
    )
    clash = sorted(set(codes.item_count_columns()) & RESERVED_COLUMNS)
    if clash:
        raise VocabularyError(
            f"vocabulary {label}: outcome names that would become the item_stats columns {clash}, "
            f"which are taken ({sorted(RESERVED_COLUMNS)}): rename them"
        )
    return Vocabulary(
        path=Path(path) if path else None,
        surfaces=surfaces,
        outcomes=outcomes,
        engaged=engaged,
        impression=impression,
        negative=negative,
        weights=weights,
        surface_weights=surface_weights,
        guarded=guarded,
        drift=drift,
        codes=codes,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        repeats=_flag(label, "repeats", raw.get("repeats", False)),
        catalogue=_catalogue(label, raw.get("catalogue"), path, read_catalogue),
    )


def _catalogue(label: str, raw: Any, path: Path | str | None, read: bool) -> Catalogue | None:
    """The `catalogue` entry read and checked (a relative path: the vocabulary file's folder);
    `read=False`: the entry checked, the file not read (None)."""
    if raw is None:
        return None
    folder = Path(path).resolve().parent if path else Path.cwd()
    try:
        return parse_catalogue(label, raw, folder, read=read)
    except CatalogueError as exc:
        raise VocabularyError(str(exc)) from None


def _flag(path: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise VocabularyError(f"vocabulary {path}: `{key}` must be true or false, got {value!r}")
    return value


def load_vocabulary(path: str | Path, ledger_path: Path | None = None, *, read_catalogue: bool = True) -> Vocabulary:
    """The vocabulary in `path`, its codes extending the ledger at `ledger_path` (if recorded).
    `read_catalogue=False` (the serving CLI: a model carries its catalogue fields) leaves its
    catalogue file unread: `catalogue` is then None."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise VocabularyError(f"vocabulary file {path} does not exist") from None
    return parse_vocabulary(text, path, ledger_path, read_catalogue=read_catalogue)


def default_vocabulary_file(source: str) -> Path:
    """The vocabulary a source uses when none is chosen."""
    if source not in DEFAULT_FILES:
        raise VocabularyError(f"no default vocabulary for source {source!r}: choose one with --vocabulary FILE")
    return DEFAULT_FILES[source]


def builtin_vocabulary(source: str = "simulated") -> Vocabulary:
    """The shipped vocabulary of a built-in source (simulated, movielens-1m, movielens-100k)."""
    return load_vocabulary(default_vocabulary_file(source))


def codes_record(codes: EventCodes, vocabulary: str | None = None) -> dict[str, Any]:
    """The ledger file's content: names in code order, plus what Feast's definitions derive
    from them (feature_repo/features.py builds the feature views from it)."""
    return {
        "outcomes": list(codes.outcomes),
        "surfaces": list(codes.surfaces),
        "item_count_columns": list(codes.item_count_columns()),
        "vocabulary": vocabulary,
    }


def check_codes_agree(ours: EventCodes, theirs: EventCodes | Mapping[str, Any], what: str, where: str) -> None:
    """Refuse codes that give a name another code (or a code another name) than `theirs`; one
    ledger may extend the other (names added later)."""
    other = theirs if isinstance(theirs, EventCodes) else None
    their_lists = (
        (other.outcomes, other.surfaces)
        if other
        else (tuple(theirs.get("outcomes", ())), tuple(theirs.get("surfaces", ())))
    )
    for kind, mine, their in (("outcome", ours.outcomes, their_lists[0]), ("surface", ours.surfaces, their_lists[1])):
        for code, (a, b) in enumerate(zip(mine, their)):
            if a != b:
                raise VocabularyMismatchError(
                    f"{what}: {kind} code {code} means {a!r} there but {b!r} in {where}: the codes disagree "
                    f"({what}: {list(mine)}; {where}: {list(their)})"
                )


class VocabularyMismatchError(VocabularyError):
    """Two recorded code mappings give a name different codes."""


def record_codes(codes: EventCodes, ledger_path: Path, vocabulary: str | None = None) -> bool:
    """Record `codes` in the ledger at `ledger_path` (written atomically, only when it grows).
    Refuses codes that disagree with the recorded ones (another process recorded other names
    since this one loaded the vocabulary: reload it). True when the ledger was written."""
    from storage.files import atomic_write_text

    recorded = read_ledger(ledger_path)
    check_codes_agree(codes, recorded, "these codes", f"the code ledger {ledger_path}")
    if len(recorded["outcomes"]) > len(codes.outcomes) or len(recorded["surfaces"]) > len(codes.surfaces):
        raise VocabularyMismatchError(
            f"the code ledger {ledger_path} has codes this process does not know ({dict(recorded)}); "
            "it was extended since the vocabulary was loaded: reload the code location"
        )
    content = json.dumps(codes_record(codes, vocabulary), indent=1) + "\n"
    if Path(ledger_path).exists() and Path(ledger_path).read_text() == content:
        return False
    atomic_write_text(Path(ledger_path), content)
    return True
