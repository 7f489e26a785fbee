"""What makes felix's LLM trainers (SFT, DPO) faster than the plain TRL script, with the same semantics.

- `LengthGroupedEpochSampler`: batches of similar lengths (`data.grouping.length_grouped_order`), seeded by
  (seed, epoch) so a resume is exact. SFT under `packing: auto` without flash attention, and DPO.
- `score_labelled_positions_only()`: TRL's fused LM head projects only the positions that have a label (on CPU;
  TRL does it on Triton devices already). SFT and DPO, where prompts are a third or more of the tokens.
- `GroupedLabelledMixin`: both, for a TRL trainer class (`_SFTTrainer`, `_DPOTrainer`), switched per instance.
- LoRA dropout on CPU from a fast generator: `trainers.fast_dropout` (shared with GLiNER2).
"""

from __future__ import annotations

import contextlib

import torch

from felix_train.data.grouping import length_grouped_order

class LengthGroupedEpochSampler(torch.utils.data.Sampler):
    """Length-grouped batches (`data.grouping.length_grouped_order`) in an order that depends only on (seed, epoch).

    transformers' `LengthGroupedSampler` draws from the global RNG, so a resumed run would see another
    order; seeding per epoch keeps resume exact. Mega-batches of 50 batches whatever the data's size
    (transformers makes them smaller so that small data gives 4 of them, and its batches then stay a third
    padding), batches in random order, the one with the longest record first (a batch that does not fit in
    memory fails at step 1). The same examples and loss semantics as random batches, less padding.
    """

    MEGA_BATCH_MULT = 50

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(length_grouped_order(self.lengths, self.batch_size, generator=generator,
                                         mega_batch_mult=self.MEGA_BATCH_MULT, longest_first=True))


@contextlib.contextmanager
def score_labelled_positions_only():
    """For the calls inside: TRL's fused LM head projects only the positions that have a label.

    TRL 1.16 does this on Triton devices and projects every position elsewhere (so that Neuron compiles one
    tile shape); on CPU nothing compiles, and the prompt and padding positions (a third of a chat batch or
    more) are pure waste. Same per-token log-probabilities, loss and metrics. A no-op if TRL changes.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


class GroupedLabelledMixin:
    """Put before a TRL trainer class: length-grouped batches when `group_by_length_seed` is set (the lengths from
    `row_lengths`), the LM head scored on labelled positions only when `score_labelled_only` is set (CPU)."""

    group_by_length_seed: int | None = None
    score_labelled_only: bool = False

    def row_lengths(self, dataset) -> list[int] | None:
        """The padded length of each training row of `dataset`, or None where it has not the columns for it."""
        raise NotImplementedError

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = self.row_lengths(dataset) if self.group_by_length_seed is not None else None
        if lengths is None:
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedEpochSampler(lengths, batch, self.group_by_length_seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scope = score_labelled_positions_only() if self.score_labelled_only else contextlib.nullcontext()
        with scope:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
