"""Length rewards: `length_penalty`, 1.0 at a target length in characters, with its params model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


def length_penalty(completion: str, *, target_length: int = 200, max_length: int | None = None) -> float:
    """`1 - min(1, |len - target_length| / target_length)` over characters; 0.0 beyond `max_length`.

    1.0 at exactly `target_length` characters, falling linearly to 0.0 at 0 and at
    twice the target.
    """
    n = len(completion)
    if max_length is not None and n > max_length:
        return 0.0
    return 1.0 - min(1.0, abs(n - target_length) / target_length)


class LengthPenaltyParams(BaseModel):
    """Params of `length_penalty`."""

    model_config = ConfigDict(extra="forbid")

    target_length: int = Field(200, gt=0, description="Completion length in characters that scores 1.0.")
    max_length: int | None = Field(None, gt=0, description="Hard cap in characters; longer completions score 0.0.")

    @model_validator(mode="after")
    def _cap_above_target(self) -> "LengthPenaltyParams":
        if self.max_length is not None and self.max_length < self.target_length:
            raise ValueError(f"`max_length` ({self.max_length}) must be >= `target_length` ({self.target_length}); "
                             "raise `max_length` or lower `target_length`")
        return self
