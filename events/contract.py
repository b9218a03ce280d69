"""The event contract: one row per user action or impression.

Every stage imports its column names, vocabularies and the pandera schema from here; no other
module re-declares them.

| column     | type                      | meaning                                               |
|------------|---------------------------|-------------------------------------------------------|
| user_id    | int64 >= 0                | the acting user                                       |
| item_id    | int64 >= 0                | the item acted on or impressed                        |
| surface    | str in the vocabulary     | where it happened                                     |
| outcome    | str in the vocabulary     | what happened (an impression, an engagement, ...)     |
| event_ts   | timestamp[us, UTC]        | when; never naive, never in the future                |
| session_id | int64 >= 0                | session the event belongs to                          |
| query_id   | Int64 (nullable) >= 0     | search query, for search-surface events               |

Which surfaces and outcomes a deployment accepts, and what each outcome means (engagement,
impression, negative), is its vocabulary (`events.vocabulary`, one YAML file per deployment). The
constants below are the codes of the project's own data (the simulated world and MovieLens):
the built-in vocabularies keep them, and library functions that are given no vocabulary use
them (`BUILTIN_CODES`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa

SURFACES: tuple[str, ...] = ("homefeed", "search", "related")

# Outcome codes of the built-in data. Codes are stable: they are stored in feature tables and
# model inputs. `rating_1`..`rating_5` are MovieLens' levels (every rating is an engagement).
OUTCOMES: tuple[str, ...] = (
    "impression",
    "click",
    "save",
    "hide",
    "rating_1",
    "rating_2",
    "rating_3",
    "rating_4",
    "rating_5",
)
OUTCOME_CODE: dict[str, int] = {name: code for code, name in enumerate(OUTCOMES)}
SURFACE_CODE: dict[str, int] = {name: code for code, name in enumerate(SURFACES)}

# An impression alone is not an engagement; hide is an explicit negative engagement.
ENGAGED_OUTCOMES: frozenset[str] = frozenset(OUTCOMES) - {"impression", "hide"}


@dataclass(frozen=True)
class EventCodes:
    """What feature tables, training and serving need of a vocabulary: the code of every outcome
    and surface (names by code: position i is code i; the vocabulary's code ledger, which only
    ever grows), which outcomes are engagements (model input tokens, training targets, recall)
    and which one marks an impression (None: the log has none). The default is the built-in
    data's (the constants above)."""

    outcomes: tuple[str, ...] = OUTCOMES
    surfaces: tuple[str, ...] = SURFACES
    engaged: tuple[str, ...] = tuple(o for o in OUTCOMES if o in ENGAGED_OUTCOMES)
    impression: str | None = "impression"
    negative: tuple[str, ...] = field(default=("hide",))

    def __post_init__(self) -> None:
        for kind, names in (("outcome", self.outcomes), ("surface", self.surfaces)):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} codes name an {kind} twice: {list(names)}")
        unknown = (set(self.engaged) | set(self.negative) | {self.impression} - {None}) - set(self.outcomes)
        if unknown:
            raise ValueError(f"outcomes {sorted(unknown)} have no code (codes: {list(self.outcomes)})")

    @property
    def outcome_code(self) -> dict[str, int]:
        return {name: code for code, name in enumerate(self.outcomes)}

    @property
    def surface_code(self) -> dict[str, int]:
        return {name: code for code, name in enumerate(self.surfaces)}

    @property
    def engaged_codes(self) -> list[int]:
        """Codes of the engaged outcomes, ascending."""
        return sorted(self.outcome_code[o] for o in self.engaged)

    @property
    def impression_code(self) -> int:
        """The impression outcome's code; -1 (matches no event) when the log has none."""
        return self.outcome_code[self.impression] if self.impression is not None else -1

    def item_count_columns(self) -> dict[str, list[int]]:
        """The item_stats feature table's count columns: one per outcome family, in code order,
        named by the family plus "s" (`click` -> `clicks`; `rating_1`..`rating_5` -> `ratings`,
        a trailing `_<number>` is a level of its family). Every outcome with a code has one,
        retired ones too, so the Feast view's columns only ever grow."""
        columns: dict[str, list[int]] = {}
        for code, name in enumerate(self.outcomes):
            columns.setdefault(re.sub(r"_\d+$", "", name) + "s", []).append(code)
        return columns

    def for_model(self, outcomes: Sequence[str], surfaces: Sequence[str]) -> EventCodes:
        """These codes as a model trained with (`outcomes`, `surfaces`) knows them: a model
        trained before names were added to the ledger has fewer codes (the ledger only grows, so
        its codes are a prefix of these); names it has no code for are left out."""
        outcomes, surfaces = tuple(outcomes), tuple(surfaces)
        return EventCodes(
            outcomes=outcomes,
            surfaces=surfaces,
            engaged=tuple(o for o in self.engaged if o in outcomes),
            impression=self.impression if self.impression in outcomes else None,
            negative=tuple(o for o in self.negative if o in outcomes),
        )

    def mapping(self) -> dict[str, dict[str, int]]:
        """{"outcomes": {name: code}, "surfaces": {name: code}}: what feature tables and
        manifests record."""
        return {"outcomes": self.outcome_code, "surfaces": self.surface_code}

    def to_dict(self) -> dict:
        return {
            "outcomes": list(self.outcomes),
            "surfaces": list(self.surfaces),
            "engaged": list(self.engaged),
            "impression": self.impression,
            "negative": list(self.negative),
        }

    @classmethod
    def from_dict(cls, data: dict) -> EventCodes:
        return cls(
            outcomes=tuple(data["outcomes"]),
            surfaces=tuple(data["surfaces"]),
            engaged=tuple(data["engaged"]),
            impression=data.get("impression"),
            negative=tuple(data.get("negative") or ()),
        )


BUILTIN_CODES = EventCodes()  # the codes of the simulated world and MovieLens

COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "surface",
    "outcome",
    "event_ts",
    "session_id",
    "query_id",
)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != "query_id")
# Two rows with the same key are the same event delivered twice.
EVENT_KEY: tuple[str, ...] = ("user_id", "item_id", "surface", "outcome", "event_ts", "session_id")

TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
MAX_ID = 2**53  # ids above this lose precision in JSON and float pipelines: treated as corrupt
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)


def _not_in_future(ts: pd.Series) -> pd.Series:
    return ts <= pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE


def event_schema(
    surfaces: Sequence[str] = SURFACES, outcomes: Sequence[str] = OUTCOMES, vocabulary_file: str | None = None
) -> pa.DataFrameSchema:
    """The pandera contract for these surfaces and outcomes. With `vocabulary_file`, a value
    outside them fails with a reason that names the file (`surface: isin(...) of vocabulary F`)."""

    def isin(values: Sequence[str]) -> pa.Check:
        if vocabulary_file is None:
            return pa.Check.isin(tuple(values))
        return pa.Check.isin(tuple(values), error=f"isin({tuple(values)!r}) of vocabulary {vocabulary_file}")

    return pa.DataFrameSchema(
        name="events",
        columns={
            "user_id": pa.Column("int64", pa.Check.in_range(0, MAX_ID), nullable=False),
            "item_id": pa.Column("int64", pa.Check.in_range(0, MAX_ID), nullable=False),
            "surface": pa.Column(str, isin(surfaces), nullable=False),
            "outcome": pa.Column(str, isin(outcomes), nullable=False),
            "event_ts": pa.Column(
                TIMESTAMP_DTYPE,
                [
                    pa.Check.ge(pd.Timestamp("1970-01-01", tz="UTC"), name="not_before_1970"),
                    pa.Check(_not_in_future, name="not_in_future", element_wise=False),
                ],
                nullable=False,
            ),
            "session_id": pa.Column("int64", pa.Check.in_range(0, MAX_ID), nullable=False),
            "query_id": pa.Column("Int64", pa.Check.in_range(0, MAX_ID), nullable=True, required=False),
        },
        strict=True,
        ordered=False,
    )


EVENT_SCHEMA = event_schema()  # the built-in data's contract


def empty_events() -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype="int64"),
            "item_id": pd.Series([], dtype="int64"),
            "surface": pd.Series([], dtype=object),
            "outcome": pd.Series([], dtype=object),
            "event_ts": pd.Series([], dtype=TIMESTAMP_DTYPE),
            "session_id": pd.Series([], dtype="int64"),
            "query_id": pd.Series([], dtype="Int64"),
        }
    )


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` with exactly the contract's columns, in order, with the contract's dtypes.

    For frames a source produced itself (already valid); raw input goes through ingestion.
    """
    out = df.copy()
    if "query_id" not in out.columns:
        out["query_id"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out = out[list(COLUMNS)]
    for col in ("user_id", "item_id", "session_id"):
        out[col] = out[col].astype("int64")
    out["query_id"] = out["query_id"].astype("Int64")
    out["surface"] = out["surface"].astype(object)
    out["outcome"] = out["outcome"].astype(object)
    out["event_ts"] = pd.to_datetime(out["event_ts"], utc=True).astype(TIMESTAMP_DTYPE)
    return out
