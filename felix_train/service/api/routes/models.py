"""`GET /base-models`: the catalog, the supported base models and what each allows."""

from __future__ import annotations

from fastapi import APIRouter

from felix_train.catalog import CATALOG
from felix_train.service.api.deps import CurrentUser
from felix_train.service.api.schemas import BaseModelPublic

router = APIRouter(tags=["models"])


@router.get("/base-models", response_model=list[BaseModelPublic])
def list_base_models(user: CurrentUser) -> list[BaseModelPublic]:
    """The supported base models and what each allows (training types, algorithms, defaults)."""
    return [BaseModelPublic.from_entry(e) for e in CATALOG]
