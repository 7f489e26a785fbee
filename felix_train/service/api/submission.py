"""Submitting a job: a spec as a user sent it → validated against that user's datasets and checkpoints →
a `requested` job in the store (the spec the worker runs), or a `SpecError` in the user's own words.

The spec names the user's datasets by the names the user gave them; the service adds `engine.dataset_owner`
so that validation here and the runner later look them up in that user's namespace of the registry (their
datasets, then the built-ins). Another user's checkpoint UUID is validated as an unknown one.
"""

from __future__ import annotations

import copy
import difflib
import uuid
from typing import Any

from felix_train.catalog import get_entry, is_checkpoint_uuid
from felix_train.checkpoints import find_checkpoint
from felix_train.data.registry import DatasetRegistry
from felix_train.errors import CheckpointNotFound, DatasetError, ErrorItem, SpecError
from felix_train.jobs import new_job_id
from felix_train.service.api.config import Settings
from felix_train.service.store import Job, Store, User
from felix_train.spec import validate_spec

SERVICE_ENGINE_KEYS = ("home", "job_id", "dataset_owner")
"""`engine` fields the service sets; a submitted spec that sets one is refused (`service_managed`)."""


def submit_job(*, payload: Any, user: User, store: Store, settings: Settings, registry: DatasetRegistry) -> Job:
    """Validate a spec against the user's datasets and create its job in `requested`.

    Raises:
        SpecError: every problem found, located in the spec.
    """
    data, errors, substitutes = prepare_spec(payload, user=user, store=store, settings=settings)
    try:
        resolved = validate_spec(data, home=settings.home)
    except SpecError as err:
        errors.extend(err.errors)
    if not errors:  # records `run` would refuse under `length_policy: error`, refused here with file and line
        from felix_train.estimate import check_lengths

        try:
            check_lengths(resolved, home=settings.home, materialise=False)
        except DatasetError as err:
            errors.extend(err.errors or [ErrorItem(("datasets",), str(err), "dataset_invalid")])
    if errors:
        user_names = [d.name for d in store.list_datasets(owner_id=user.id)] + registry.builtin_names()
        raise SpecError(public_errors(errors, payload, substitutes, user_names))
    job_id = new_job_id()
    spec = resolved.to_json()
    spec["engine"]["job_id"] = job_id
    spec["engine"]["home"] = None
    return store.create_job(job_id=job_id, owner_id=user.id, name=resolved.name, spec=spec,
                            project_id=resolved.project_id)


def prepare_spec(payload: Any, *, user: User, store: Store,
                 settings: Settings) -> tuple[dict, list[ErrorItem], dict[str, str]]:
    """Map a submitted spec onto the service: the user's dataset namespace, owned checkpoints, service-set fields.

    Returns the spec to validate, the errors found here, and `{substitute: what the user sent}`.
    """
    if not isinstance(payload, dict):
        got = type(payload).__name__ if payload is not None else "null"
        raise SpecError([ErrorItem((), f"the body must be a JSON object (a job spec), got {got}", "model_type")])
    data = copy.deepcopy(payload)
    errors: list[ErrorItem] = []
    engine = data.setdefault("engine", {})
    if isinstance(engine, dict):
        for key in SERVICE_ENGINE_KEYS:
            if engine.get(key) is not None:
                errors.append(ErrorItem(("engine", key), f"`engine.{key}` is set by the service; remove it",
                                        "service_managed"))
        dist = engine.get("distributed")
        if isinstance(dist, dict) and dist.get("config") is not None:
            errors.append(ErrorItem(("engine", "distributed", "config"), "`engine.distributed.config` names a file "
                                    "on the server and is set by the workers; remove it", "service_managed"))
            dist.pop("config")  # refused here: validation must not look for the file (nor say whether it exists)
        engine["dataset_owner"] = user.id

    substitutes: dict[str, str] = {}
    base = data.get("base_model")
    if isinstance(base, str) and get_entry(base) is None and is_checkpoint_uuid(base):
        owned = False
        try:
            manifest, _ = find_checkpoint(base, settings.home)
            owned = store.job_owner(job_id=manifest.job_id) == user.id
        except CheckpointNotFound:
            pass
        if not owned:  # another user's checkpoint is unknown here: validate as if it did not exist
            data["base_model"] = str(uuid.uuid4())
            substitutes[data["base_model"]] = base
    return data, errors, substitutes


def _submitted(payload: Any, loc: tuple) -> Any:
    """The value at `loc` in the body as the user sent it (None when absent)."""
    for part in loc:
        try:
            payload = payload[part]
        except (KeyError, IndexError, TypeError):
            return None
    return payload


def public_errors(errors: list[ErrorItem], payload: dict, substitutes: dict[str, str],
                  user_names: list[str]) -> list[ErrorItem]:
    """Errors in the user's words: API hints instead of CLI ones, nothing about others' resources."""
    out = []
    for e in errors:
        msg = e.msg
        if e.type == "dataset_not_found":
            wanted = _submitted(payload, e.loc)
            close = difflib.get_close_matches(str(wanted), user_names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            msg = f"no dataset named {wanted!r}; {hint}`GET /felix/datasets` lists yours"
        elif e.type == "unknown_checkpoint":
            msg = (f"unknown checkpoint {_submitted(payload, e.loc)!r}: none of your jobs has it; "
                   "`GET /felix/training-jobs/{id}/checkpoints` lists a job's checkpoint UUIDs")
        else:
            for substitute, sent in substitutes.items():
                msg = msg.replace(substitute, sent)
        out.append(ErrorItem(e.loc, msg, e.type))
    return out
