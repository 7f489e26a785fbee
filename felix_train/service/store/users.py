"""The store's queries for users (hashed API keys), their datasets, and per-user rate limits."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from sqlalchemy import delete, select, update

from felix_train.service.store.errors import Conflict, DatasetNotFound, UserNotFound
from felix_train.service.store.schema import Dataset, RateHit, User, utcnow
from felix_train.service.store.sessions import StoreBase

USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
API_KEY_PREFIX = "felix_"

_USER_NAME_RE = re.compile(USER_NAME_PATTERN)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class UserQueries(StoreBase):
    """Users, datasets and rate limits; every read of a user's resource is scoped by `owner_id`."""

    # -- users ----------------------------------------------------------------------------------
    def create_user(self, *, name: str) -> tuple[User, str]:
        """A new user and its API key (returned once; only its hash is stored).

        Raises:
            ValueError: the name is invalid.
            Conflict: a user of that name exists.
        """
        if not isinstance(name, str) or not _USER_NAME_RE.match(name):
            raise ValueError(f"user name must match {USER_NAME_PATTERN}, got {name!r}")
        api_key = new_api_key()
        with self.writing() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise Conflict(f"user {name!r} exists; `felix-train users rotate {name}` gives it a new key")
            user = User(name=name, key_hash=hash_api_key(api_key), created_at=utcnow())
            s.add(user)
        return user, api_key

    def rotate_key(self, *, name: str) -> str:
        """A new API key for `name`; the old one stops working. Raises UserNotFound."""
        api_key = new_api_key()
        with self.writing() as s:
            done = s.execute(update(User).where(User.name == name).values(key_hash=hash_api_key(api_key)))
            if done.rowcount == 0:
                raise UserNotFound(f"no user {name!r}; `felix-train users add {name}` creates it")
        return api_key

    def user_by_api_key(self, *, api_key: str) -> User | None:
        with self.reading() as s:
            return s.scalar(select(User).where(User.key_hash == hash_api_key(api_key)))

    def list_users(self) -> list[User]:
        with self.reading() as s:
            return list(s.scalars(select(User).order_by(User.id)))

    # -- datasets -------------------------------------------------------------------------------
    def create_dataset(self, *, owner_id: int, name: str, state: str, manifest: dict | None,
                       replace: bool = False) -> Dataset:
        """Record a user's dataset. Raises Conflict when it exists and `replace` is False."""
        now = utcnow()
        with self.writing() as s:
            row = s.scalar(select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))
            if row is not None and not replace:
                raise Conflict(f"dataset {name!r} exists; delete it first or upload under another name")
            if row is None:
                row = Dataset(owner_id=owner_id, name=name, created_at=now)
                s.add(row)
            row.state, row.manifest, row.updated_at = state, manifest, now
        return row

    def update_dataset(self, *, owner_id: int, name: str, state: str, manifest: dict | None) -> None:
        with self.writing() as s:
            s.execute(update(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name)
                      .values(state=state, manifest=manifest, updated_at=utcnow()))

    def get_dataset(self, *, owner_id: int, name: str) -> Dataset:
        with self.reading() as s:
            row = s.scalar(select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))
        if row is None:
            raise DatasetNotFound(f"no dataset named {name!r}; `GET /felix/datasets` lists yours")
        return row

    def list_datasets(self, *, owner_id: int) -> list[Dataset]:
        with self.reading() as s:
            return list(s.scalars(select(Dataset).where(Dataset.owner_id == owner_id).order_by(Dataset.name)))

    def datasets_in_state(self, *, state: str) -> list[Dataset]:
        with self.reading() as s:
            return list(s.scalars(select(Dataset).where(Dataset.state == state)))

    def delete_dataset(self, *, owner_id: int, name: str) -> None:
        with self.writing() as s:
            done = s.execute(delete(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))
        if done.rowcount == 0:
            raise DatasetNotFound(f"no dataset named {name!r}; `GET /felix/datasets` lists yours")

    # -- rate limits ----------------------------------------------------------------------------
    def hit_rate_limit(self, *, user_id: int, key: str, limit: int, window_s: float,
                       now: float | None = None) -> float | None:
        """Count one request of `user_id` against `limit` per `window_s` seconds (a sliding window).

        Returns None when the request is allowed (and counted), else the seconds until one is
        (the refused request is not counted). Shared by every API process using the database.
        """
        now = time.time() if now is None else now
        with self.writing() as s:
            # serialise a user's hits (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)
            s.execute(select(User.id).where(User.id == user_id).with_for_update())
            s.execute(delete(RateHit).where(RateHit.user_id == user_id, RateHit.key == key,
                                            RateHit.at <= now - window_s))
            times = list(s.scalars(select(RateHit.at).where(RateHit.user_id == user_id, RateHit.key == key)
                                   .order_by(RateHit.at)))
            if len(times) >= limit:
                return max(times[len(times) - limit] + window_s - now, 0.001)
            s.add(RateHit(user_id=user_id, key=key, at=now))
        return None
