"""The API's request and response bodies (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from patientinsight.records.columns import MAX_UID_CHARS
from patientinsight.retrieval.searcher import RETRIEVERS


def _json_number(value: object) -> object:
    """Numbers only: JSON's true and "5" are not numbers (pydantic would take them as 1 and 5)."""
    if isinstance(value, (bool, str)):
        raise ValueError("Input should be a number")
    return value


# JSON Schema's integer includes 50.0, so an integral float passes as well; booleans and strings do not.
JsonInt = Annotated[int, Field(strict=False), BeforeValidator(_json_number)]


class QueryFilters(BaseModel):
    """Restrictions on the cases returned; age_min must not be greater than age_max (422 otherwise)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: "5" and true are not numbers

    age_min: float | None = Field(default=None, ge=0, le=150, description="Youngest age in years.")
    age_max: float | None = Field(default=None, ge=0, le=150, description="Oldest age in years.")
    sex: Literal["M", "F"] | None = Field(default=None, description="'M' or 'F'.")

    @model_validator(mode="after")
    def _ordered(self) -> QueryFilters:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min must not be greater than age_max")
        return self


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: "5" and true are not numbers

    text: str = Field(min_length=1, description="The patient, described in plain text (length limited by settings).")
    k: JsonInt = Field(default=5, ge=1, le=50, description="How many similar cases to return.")
    filters: QueryFilters = Field(default_factory=QueryFilters)
    generate: bool = Field(default=True, description="Write an analysis of the cases.")
    exclude: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_UID_CHARS)]] = Field(
        default_factory=list,
        max_length=100,
        description="Case uids to leave out: no stage of the retrieval sees them (candidates, feedback, fusion).",
    )


class CaseOut(BaseModel):
    patient_uid: str
    pmid: str | None
    title: str | None
    article_url: str | None = Field(description="The article's PubMed page.")
    pmc_url: str | None = Field(description="The article's full text on PubMed Central (from the uid's PMC number).")
    age_years: float | None
    age_display: str | None = Field(
        description="The age as a clinician says it: '19 hours', '1 week', '10 months', '2 years 8 months'."
    )
    sex: str | None
    synthetic: bool = Field(
        description="A record of the synthetic demo sample: invented text; its PMID and PMC number are not its own."
    )
    score: float | None = Field(
        description="The retriever's score: higher is more similar; its scale depends on the retriever."
    )
    passages: list[str] = Field(description="The sentences of the case that best match the query.")


class CaseDetail(CaseOut):
    text: str
    index_version: str


class Citation(BaseModel):
    ref: int = Field(description="The case's position in `cases`, from 1.")
    patient_uid: str


class AnalysisOut(BaseModel):
    generator: str
    model: str | None
    text: str | None
    citations: list[Citation]
    error: str | None = Field(description="Why the generator gave no analysis; the cases are still there.")
    usage: dict[str, int] | None


class QueryResponse(BaseModel):
    cases: list[CaseOut]
    analysis: AnalysisOut
    index_version: str
    retriever: str = Field(description=f"The retriever that ranked the cases ({', '.join(RETRIEVERS)}).")
    timings_ms: dict[str, float]


class FollowUpRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(
        min_length=1, description="A question about the cases (length limited by settings, as a query's text)."
    )
    uids: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_UID_CHARS)]] = Field(
        min_length=1, max_length=50, description="The cases to answer from: the uids of an answer's cases, in order."
    )


class FollowUpCase(BaseModel):
    ref: int = Field(description="The number the answer cites the case by, from 1.")
    patient_uid: str
    title: str | None


class FollowUpResponse(BaseModel):
    answer: AnalysisOut
    cases: list[FollowUpCase]
    index_version: str
    timings_ms: dict[str, float]


class Ready(BaseModel):
    ready: bool
    index_version: str | None
    records: int
    model_warm: bool
    synthetic_records: int = Field(
        default=0, description="How many of the loaded records come from the synthetic demo sample."
    )


class Problem(BaseModel):
    detail: str
