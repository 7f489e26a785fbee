"""The store's domain errors (never HTTP ones: the API maps them once)."""

from __future__ import annotations

from felix_train.errors import FelixError


class StoreError(FelixError):
    """Base class of the store's domain errors."""


class NotFound(StoreError):
    """A resource does not exist (or belongs to another user: the same answer, on purpose)."""


class DatasetNotFound(NotFound):
    """No dataset of that name for this user."""


class UserNotFound(NotFound):
    """No user of that name."""


class Conflict(StoreError):
    """The resource exists but its state forbids the operation (a running job cannot be deleted, ...)."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer felix_train than this one: its schema revision is unknown here."""
