"""The API's own errors. Each is mapped to its HTTP answer once, in `app.install_handlers` (as are the store's
`NotFound`/`Conflict` and the engine's `SpecError`/`DatasetError`); routes raise them and never build an answer."""

from __future__ import annotations

import math

from felix_train.errors import FelixError


class NotAuthenticated(FelixError):
    """No or an unknown bearer API key (401)."""


class RateLimited(FelixError):
    """Over the per-user job submission rate (429 with `Retry-After`)."""

    def __init__(self, retry_after_s: float, limit: int):
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limit: at most {limit} job submissions per minute; retry in "
                         f"{math.ceil(retry_after_s)} s")


class LinkExpired(FelixError):
    """A download token with a valid signature, past its expiry (410)."""


class PayloadTooLarge(FelixError):
    """An upload over `Settings.max_upload_bytes` (413)."""


class ServingUnavailable(FelixError):
    """A `deployed` job's inference process did not answer: it is stopping, or just died (503)."""
