"""What one lifecycle step hands the next, per surface and day, as typed records (frozen
dataclasses) stored by `assets.state.LifecycleState.save` / `load` as the JSON files of the
state folder (`{step}.json`, one key per field):

    finetune   FinetuneRecord    the fine-tuned model of the day and its training window
    candidate  CandidateRecord   the version published from it
    canary     CanaryRecord      the canary evaluation's figures, then the offline gate's verdict
    release    ReleaseRecord     online canary mode: what the offline verdict released
    trial      TrialRecord       online canary mode: the canary's trial through the day, then its decision
    promotion  PromotionRecord   what the champion step did with the verdict
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Self


@dataclass(frozen=True)
class Record:
    step: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The record of a stored file; keys it does not name are left out (older files)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def but(self, **changes) -> Self:
        return replace(self, **changes)


@dataclass(frozen=True)
class FinetuneRecord(Record):
    step: ClassVar[str] = "finetune"
    path: str
    train_days: list[str]
    pretrained: str = ""
    pretrained_through: str = ""


@dataclass(frozen=True)
class CandidateRecord(Record):
    step: ClassVar[str] = "candidate"
    version: str
    uri: str = ""
    model_sha256: str = ""


@dataclass(frozen=True)
class CanaryRecord(Record):
    """The canary evaluation of the day's candidate (metrics per role: candidate, champion; the
    baselines' figures: popularity, random where measurable, buy again where the vocabulary allows
    repeats) and, once the gate ran, its verdict
    (`passed` None until then)."""

    step: ClassVar[str] = "canary"
    candidate: str
    champion: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    yardstick: str = "recall@100"
    outcomes: list[str] = field(default_factory=list)
    users: int = 0
    data_through: dict[str, str | None] = field(default_factory=dict)
    unloadable: dict[str, str] = field(default_factory=dict)
    served_rows_left_out: int = 0
    passed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    gate_overrides: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReleaseRecord(Record):
    step: ClassVar[str] = "release"
    version: str
    action: str
    released_for: str = ""
    traffic: float = 0.0
    champion: str | None = None


@dataclass(frozen=True)
class TrialRecord(Record):
    """The trial of the canary that served the day (`version` None: none served), over its days
    so far (`started` its first day, `trial_day` 1 on it), then the online gate's decision
    (`decision` promote / roll back / continue, `passed` True only for promote; None until the
    gate ran)."""

    step: ClassVar[str] = "trial"
    version: str | None
    day: str
    champion: str | None = None
    comparison: dict[str, Any] = field(default_factory=dict)
    load_error: str | None = None
    passed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    started: str = ""
    trial_day: int = 0
    decision: str | None = None


@dataclass(frozen=True)
class PromotionRecord(Record):
    """The champion step's outcome: `version` the champion after it, `promoted` whether it changed
    to the candidate, `verdict` the day's line (`promoted`, `not promoted: <first reason>`)."""

    step: ClassVar[str] = "promotion"
    version: str | None
    previous: str | None
    promoted: bool
    verdict: str
    trial: dict[str, Any] | None = None
