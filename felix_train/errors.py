"""Errors that cross module boundaries.

Each carries what went wrong, what was got and how to fix it, in spec words.
Exit codes follow DESIGN.md: a run maps these to 2 (spec), 3 (dataset), 1 (other).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ErrorItem:
    """One field-level problem, shaped like an item of FastAPI's 422 body."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def to_dict(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class FelixError(Exception):
    """Base class of every error felix_train raises on purpose."""

    exit_code = 1


class SpecError(FelixError):
    """A job spec is invalid. `errors` lists every problem found, not just the first."""

    exit_code = 2

    def __init__(self, errors: list[ErrorItem]):
        self.errors = list(errors)
        lines = [f"  {'.'.join(str(p) for p in e.loc) or '(spec)'}: {e.msg} [{e.type}]" for e in self.errors]
        super().__init__(f"job spec is invalid ({len(self.errors)} error(s)):\n" + "\n".join(lines))

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self.errors]


class DatasetError(FelixError):
    """A dataset file or registry entry is invalid or unusable for the job."""

    exit_code = 3

    def __init__(self, message: str, errors: list[ErrorItem] | None = None):
        self.errors = list(errors or [])
        super().__init__(message)

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self.errors]


class ModelNotAvailable(FelixError):
    """A catalog model cannot be materialised offline."""


class CheckpointNotFound(FelixError):
    """No checkpoint with the given UUID exists under $FELIX_HOME."""


class JobNotFound(FelixError):
    """No job folder with the given id exists under $FELIX_HOME."""
