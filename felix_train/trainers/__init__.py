"""Trainer dispatch: one entry per (model family, algorithm), imported only when used.

A trainer is `run(ctx: TrainContext) -> TrainResult` (see `felix_train.trainers.context`).
"""

from __future__ import annotations

import importlib
from typing import Callable

from felix_train.catalog import Algorithm, ModelFamily

TRAINERS: dict[tuple[ModelFamily, Algorithm], str] = {
    (ModelFamily.GLINER2, Algorithm.SFT): "felix_train.trainers.gliner2:run",
    (ModelFamily.CAUSAL_LM, Algorithm.SFT): "felix_train.trainers.sft:run",
    (ModelFamily.CAUSAL_LM, Algorithm.DPO): "felix_train.trainers.dpo:run",
    (ModelFamily.CAUSAL_LM, Algorithm.GRPO): "felix_train.trainers.grpo:run",
}


def get_trainer(family: ModelFamily, algorithm: Algorithm) -> Callable:
    target = TRAINERS.get((family, algorithm))
    if target is None:
        raise NotImplementedError(f"no trainer for {family.value} with {algorithm.value}")
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise NotImplementedError(
                f"training {family.value} models with `{algorithm.value}` is not implemented in this build yet"
            ) from err
        raise
    return getattr(module, func)
