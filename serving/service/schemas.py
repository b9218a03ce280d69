"""The API's request and response models: request models built from the deployment's vocabulary
(surfaces, outcomes, engaged outcomes as weight names) and the limits every request is checked
against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)

from events.contract import MAX_ID, OUTCOMES, SURFACES, EventCodes

ENGAGED = EventCodes().engaged  # the built-in data's engagements: the outcomes retrieval may be weighted by
MAX_K = 1000
MAX_CANDIDATES = 1000  # candidates a /v1/recommend request may bring
MAX_RECENT_EVENTS = 200
MAX_OUTCOME_WEIGHT = 1e6  # weights are ratios: any bound works, this one keeps the sum finite


@dataclass(frozen=True)
class RequestModels:
    """The request models of one service: their surface and outcome names are the deployment's
    vocabulary, listed as enums in the OpenAPI spec and checked with a reason that names them."""

    RecentEvent: type[BaseModel]
    RetrieveRequest: type[BaseModel]
    RecommendRequest: type[BaseModel]


def request_models(
    surfaces: Sequence[str] = SURFACES, outcomes: Sequence[str] = OUTCOMES, engaged: Sequence[str] = ENGAGED
) -> RequestModels:
    """`engaged`: the outcomes a request may weight retrieval by (the vocabulary's engagements: an
    impression or a negative such as `hide` would serve what users ignore or reject)."""
    surfaces, outcomes, engaged = list(surfaces), list(outcomes), list(engaged)

    def _known_surface(v: str) -> str:
        if v not in surfaces:
            raise ValueError(f"unknown surface {v!r}; known: {surfaces}")
        return v

    # every request model's surface field; the OpenAPI spec lists the names
    KnownSurface = Annotated[str, AfterValidator(_known_surface), WithJsonSchema({"type": "string", "enum": surfaces})]
    OutcomeName = Annotated[str, WithJsonSchema({"type": "string", "enum": outcomes})]
    EngagedName = Annotated[str, WithJsonSchema({"type": "string", "enum": engaged})]

    class RecentEvent(BaseModel):
        model_config = ConfigDict(extra="forbid")

        item_id: int = Field(ge=0, le=MAX_ID)
        outcome: OutcomeName = Field(description=f"one of {outcomes}")
        surface: KnownSurface | None = Field(default=None, description="default: the request's surface")
        timestamp_us: int = Field(ge=0, le=2**62, description="UTC microseconds since the epoch")

        @field_validator("outcome")
        @classmethod
        def _known_outcome(cls, v: str) -> str:
            if v not in outcomes:
                raise ValueError(f"unknown outcome {v!r}; known: {outcomes}")
            return v

    class RetrieveRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        user_id: int = Field(ge=0, le=MAX_ID)
        surface: KnownSurface = Field(description=f"one of {surfaces}")
        k: int = Field(default=100, ge=1, le=MAX_K, description="number of candidates")
        outcome_weights: dict[EngagedName, Annotated[float, Field(ge=0, le=MAX_OUTCOME_WEIGHT)]] | None = Field(
            default=None,
            description=f"engaged outcome (one of {engaged}) -> weight in [0, {MAX_OUTCOME_WEIGHT:g}], at least "
            "one > 0; only the ratios count (default: the version's weights)",
        )
        recent_events: list[RecentEvent] | None = Field(default=None, max_length=MAX_RECENT_EVENTS)
        query_id: int | None = Field(
            default=None,
            ge=0,
            le=MAX_ID,
            description="the search query of a search request (the log's query_id); a model trained on "
            "queries conditions on it, others ignore it",
        )

        @field_validator("outcome_weights")
        @classmethod
        def _valid_weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
            if v is None:
                return v
            unknown = sorted(set(v) - set(outcomes))
            if unknown:
                raise ValueError(f"unknown outcome(s) {unknown}; known: {outcomes}")
            not_engaged = sorted(set(v) - set(engaged))
            if not_engaged:
                raise ValueError(
                    f"outcome(s) {not_engaged} are not engagements and cannot weight retrieval; allowed: {engaged}"
                )
            bad = {o: w for o, w in v.items() if not math.isfinite(w) or w < 0}
            if bad:
                raise ValueError(f"outcome weights must be finite and >= 0, got {bad}")
            if not any(w > 0 for w in v.values()):
                raise ValueError("at least one outcome weight must be > 0")
            total = sum(v.values())  # <= len(outcomes) * MAX_OUTCOME_WEIGHT: finite
            return {o: w / total for o, w in v.items()}  # normalised: the shares sum to 1

    class RecommendRequest(RetrieveRequest):
        """A retrieve request whose candidates are ranked (the same fields, validation and reasons),
        optionally with the client's own candidates instead of retrieval."""

        k: int = Field(default=20, ge=1, le=MAX_K, description="number of ranked items returned")
        candidates: list[Annotated[int, Field(ge=0, le=MAX_ID)]] | None = Field(
            default=None,
            min_length=1,
            max_length=MAX_CANDIDATES,
            description="item ids to rank instead of retrieving (items the model does not know are left out)",
        )

    return RequestModels(RecentEvent, RetrieveRequest, RecommendRequest)


_BUILTIN_MODELS = request_models()
RecentEvent, RetrieveRequest = _BUILTIN_MODELS.RecentEvent, _BUILTIN_MODELS.RetrieveRequest  # the built-in vocabulary's
RecommendRequest = _BUILTIN_MODELS.RecommendRequest


class CandidateOut(BaseModel):
    item_id: int
    score: float | None = Field(description="the retrieval score (None for an exploration slot)")
    outcome: str = Field(description="the retrieval query's outcome, or `explore` for an exploration slot")
    offset: str | None
    propensity: float | None = Field(
        default=None,
        description="only with an exploration share on the surface: P(this item in this slot), 1 for a "
        "ranked slot, share / catalogue for an exploration slot (serving.service.exploration)",
    )


class RankedOut(BaseModel):
    item_id: int
    score: float = Field(
        description="sum over outcomes of weight x probability (the retrieval score "
        "when the version has no ranking head)"
    )
    probabilities: dict[str, float] | None = Field(description="per outcome the ranking head predicts")
    retrieval_score: float | None
    outcome: str | None = Field(description="the retrieval query's outcome (None for a given candidate)")
    offset: str | None
    propensity: float | None = Field(default=None, description="as in /v1/retrieve's candidates")


class ServedBy(BaseModel):
    """What every answer carries: the version that served it and the request's echo."""

    model_version: str
    index_version: str
    version: str
    served_by: str = Field(description="champion or canary")
    surface: str
    user_id: int
    k: int


class RecommendResponse(ServedBy):
    items: list[RankedOut]
    ranked_by: str = Field(description="ranking_head, or retrieval for a version without one")
    candidates_ranked: int


class RetrieveResponse(ServedBy):
    candidates: list[CandidateOut]


# -- metrics ------------------------------------------------------------------------------------
