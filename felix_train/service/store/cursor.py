"""The opaque cursor of a job list (keyset pagination): the position of a page's last row, `(created_at, id)`.

A list is ordered newest first by `(created_at, id)`; the next page is every row strictly after the
cursor's position in that order, so a page costs the same at any depth (one index range read), and
rows inserted meanwhile (newer, so before the position) never shift or repeat what follows. The
cursor carries a position only: no owner, no filters. The query adds both, so a cursor made from one
user's job shows another user nothing of it, and the same cursor works with any filter.

The text is `c1.` and the URL-safe base64 of `<created_at ISO 8601>|<job id>`: stable, URL-safe,
not meant to be read or built by clients.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from felix_train.jobs import JOB_ID_PATTERN

PREFIX = "c1."
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
MAX_LENGTH = 200
"""Longer text is no cursor of ours (an ISO timestamp and a 64-character id encode to ~130)."""


class InvalidCursor(ValueError):
    """The text is not a cursor this store made (truncated, edited, or from another API)."""


@dataclass(frozen=True)
class JobCursor:
    """A position in a job list: strictly after (older than) the row `(created_at, id)`."""

    created_at: datetime
    id: str

    @classmethod
    def of(cls, job) -> JobCursor:  # noqa: ANN001 - a Job row or anything with created_at and id
        return cls(created_at=job.created_at, id=job.id)

    def encode(self) -> str:
        when = self.created_at.astimezone(timezone.utc).isoformat(timespec="microseconds")
        raw = f"{when}|{self.id}".encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JobCursor:
        """The position `text` names.

        Raises:
            InvalidCursor: `text` is not a cursor of this API (the message says what to send instead).
        """
        fix = "pass the `next_cursor` of the previous page unchanged, or leave `after` out for the first page"
        if not isinstance(text, str) or not text.startswith(PREFIX) or len(text) > MAX_LENGTH:
            raise InvalidCursor(f"not a job list cursor (they start with {PREFIX!r}); {fix}")
        body = text[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
            when, job_id = raw.split("|", 1)
            created_at = datetime.fromisoformat(when)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor(f"a damaged job list cursor; {fix}") from None
        if created_at.tzinfo is None or not _JOB_ID_RE.match(job_id):
            raise InvalidCursor(f"a damaged job list cursor; {fix}")
        return cls(created_at=created_at.astimezone(timezone.utc), id=job_id)
