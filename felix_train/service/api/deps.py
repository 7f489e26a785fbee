"""The API's dependencies as typed `Annotated` aliases: settings, store, dataset registry, the current user
(bearer API key) and the submission rate limit. `app.dependency_overrides[get_settings] = ...` replaces one."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from felix_train.data.registry import DatasetRegistry
from felix_train.service.api.config import Settings
from felix_train.service.api.errors import NotAuthenticated, RateLimited
from felix_train.service.store import Store, User

bearer = HTTPBearer(auto_error=False, description="An API key from `felix-train users add NAME`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_registry(request: Request) -> DatasetRegistry:
    """The shared registry (built-ins and `felix-train datasets`); `UserRegistryDep` is a user's view of it."""
    return request.app.state.registry


def get_secret(request: Request) -> bytes:
    """The key that signs download tokens."""
    return request.app.state.secret


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
RegistryDep = Annotated[DatasetRegistry, Depends(get_registry)]
SecretDep = Annotated[bytes, Depends(get_secret)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def current_user(store: StoreDep, credentials: CredentialsDep) -> User:
    """The owner of the bearer API key; 401 without one or with an unknown one."""
    if credentials is None or not credentials.credentials:
        raise NotAuthenticated("missing API key: send `Authorization: Bearer <key>` "
                               "(`felix-train users add NAME` creates one)")
    user = store.user_by_api_key(api_key=credentials.credentials)
    if user is None:
        raise NotAuthenticated("unknown API key; `felix-train users rotate NAME` issues a new one")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def user_registry(registry: RegistryDep, user: CurrentUser) -> DatasetRegistry:
    """The current user's datasets (under the names they gave them) and the built-ins."""
    return registry.for_owner(user.id)


UserRegistryDep = Annotated[DatasetRegistry, Depends(user_registry)]
JobId = Annotated[str, PathParam(description="The job id.")]


def submission_rate_limit(user: CurrentUser, store: StoreDep, settings: SettingsDep) -> None:
    """At most `settings.rate_limit_per_minute` job submissions per user per minute (429 beyond)."""
    retry = store.hit_rate_limit(user_id=user.id, key="create_job", limit=settings.rate_limit_per_minute,
                                 window_s=60.0)
    if retry is not None:
        raise RateLimited(retry, settings.rate_limit_per_minute)
