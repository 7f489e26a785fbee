"""`/felix/datasets`: upload (validated in the background: `processing` → `ready`/`failed`), list, read and
delete a user's datasets; the built-in datasets are listed to every user.

Datasets are per user: the store keeps a row per (user, name) with a copy of the manifest, and the files live
in that user's namespace of the registry (`DatasetRegistry.for_owner`) under the name the user gave them. A
user's own dataset of a built-in's name wins over the built-in.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, UploadFile

from felix_train.data.registry import DatasetRegistry, DatasetState
from felix_train.errors import DatasetError
from felix_train.jobs import JobStatus
from felix_train.service.api.deps import CurrentUser, SettingsDep, StoreDep, UserRegistryDep
from felix_train.service.api.errors import PayloadTooLarge
from felix_train.service.api.schemas import DATASET_NAME_PATTERN, DatasetPublic, DatasetsPublic, Message
from felix_train.service.store import Conflict, NotFound, Store

log = logging.getLogger("felix_train.api")

router = APIRouter(prefix="/felix/datasets", tags=["datasets"])


@router.post("", status_code=202, response_model=DatasetPublic,
             responses={409: {"description": "A dataset of that name exists (pass `overwrite`)."},
                        413: {"description": "The file is over the upload limit."}})
def upload_dataset(background: BackgroundTasks, user: CurrentUser, store: StoreDep, settings: SettingsDep,
                   registry: UserRegistryDep,
                   name: Annotated[str, Form(pattern=DATASET_NAME_PATTERN, description="The dataset's name.")],
                   file: Annotated[UploadFile, File(description="A JSONL file, one record per line.")],
                   overwrite: Annotated[bool, Form(description="Replace a dataset of that name.")] = False,
                   ) -> DatasetPublic:
    """Upload a JSONL dataset. It is `processing` until validated in the background, then `ready` or `failed`."""
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the file is {file.size} bytes; the limit is {settings.max_upload_bytes}")
    if not overwrite:
        try:
            store.get_dataset(owner_id=user.id, name=name)
        except NotFound:
            pass
        else:
            raise Conflict(f"dataset {name!r} exists; upload with `overwrite=true` to replace it, or pick another name")
    if overwrite or name in registry.builtin_names():  # a queued job's name would then mean this file
        _refuse_if_in_use(store, user.id, name)
    manifest = registry.register_processing(name, file.file, overwrite=True, source=file.filename or "upload.jsonl")
    store.create_dataset(owner_id=user.id, name=name, state=manifest.state.value,
                         manifest=manifest.model_dump(mode="json"), replace=True)
    background.add_task(validate_dataset, store, registry, user.id, name)
    return DatasetPublic.from_manifest(manifest, name)


@router.get("", response_model=DatasetsPublic)
def list_datasets(user: CurrentUser, store: StoreDep, registry: UserRegistryDep) -> DatasetsPublic:
    """The user's datasets, then the built-in ones."""
    rows = store.list_datasets(owner_id=user.id)
    data = [DatasetPublic.from_manifest(r.manifest or {"state": r.state}, r.name) for r in rows]
    own = {r.name for r in rows}
    for name in registry.builtin_names():
        if name not in own:
            data.append(DatasetPublic.from_manifest(registry.get(name), name))
    return DatasetsPublic(data=data, count=len(data))


@router.get("/{name}", response_model=DatasetPublic)
def get_dataset(name: str, user: CurrentUser, store: StoreDep, registry: UserRegistryDep) -> DatasetPublic:
    """One dataset: state, format, counts, and the bad lines when `failed`."""
    try:
        row = store.get_dataset(owner_id=user.id, name=name)
    except NotFound:
        if re.match(DATASET_NAME_PATTERN, name) and name in registry.builtin_names():
            return DatasetPublic.from_manifest(registry.get(name), name)
        raise
    return DatasetPublic.from_manifest(row.manifest or {"state": row.state}, row.name)


@router.delete("/{name}", response_model=Message,
               responses={409: {"description": "A queued or running job of the user trains on it."}})
def delete_dataset(name: str, user: CurrentUser, store: StoreDep, registry: UserRegistryDep) -> Message:
    """Remove one of the user's datasets (not while a queued or running job uses it)."""
    store.get_dataset(owner_id=user.id, name=name)
    _refuse_if_in_use(store, user.id, name)
    try:
        registry.delete(name)
    except DatasetError:
        pass  # the file was already gone: the row is what remains
    store.delete_dataset(owner_id=user.id, name=name)
    return Message(message=f"dataset {name!r} deleted")


def _refuse_if_in_use(store: Store, user_id: int, name: str) -> None:
    for status in (JobStatus.REQUESTED, JobStatus.RUNNING):
        rows, _ = store.list_jobs(owner_id=user_id, status=status, limit=200)
        for job in rows:
            spec = job.spec or {}
            used = {d.get("name") for d in spec.get("datasets") or []}
            used.add(((spec.get("engine") or {}).get("eval") or {}).get("dataset"))
            if name in used:
                raise Conflict(f"dataset {name!r} is used by job {job.id} ({status.value}); wait for it to end "
                               "or stop it first")


def validate_dataset(store: Store, registry: DatasetRegistry, owner_id: int, name: str) -> None:
    """Background half of an upload: validate the file, record `ready` or `failed` with its line errors."""
    try:
        manifest = registry.validate(name)
    except DatasetError as err:  # deleted meanwhile
        log.info("dataset %s of user %s: %s", name, owner_id, err)
        return
    except Exception as err:  # noqa: BLE001 - recorded as the dataset's failure, never lost
        log.exception("dataset %s of user %s: validation crashed", name, owner_id)
        store.update_dataset(owner_id=owner_id, name=name, state=DatasetState.FAILED.value,
                             manifest={"name": name, "state": DatasetState.FAILED.value,
                                       "error": f"validation crashed: {type(err).__name__}: {err}"})
        return
    store.update_dataset(owner_id=owner_id, name=name, state=manifest.state.value,
                         manifest=manifest.model_dump(mode="json"))


def revalidate_processing(store: Store, registry: DatasetRegistry) -> None:
    """Datasets left `processing` by a stopped API process are validated again (at startup)."""
    for row in store.datasets_in_state(state=DatasetState.PROCESSING.value):
        validate_dataset(store, registry.for_owner(row.owner_id), row.owner_id, row.name)
