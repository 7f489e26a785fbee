"""What makes felix's LLM trainers (SFT, DPO, GRPO) faster than the plain TRL script, with the same semantics.

- `LengthGroupedEpochSampler`: batches of similar lengths (`data.grouping.length_grouped_order`), seeded by
  (seed, epoch) so a resume is exact. SFT under `packing: auto` without flash attention, and DPO.
- `score_labelled_positions_only()`: TRL's fused LM head projects only the positions that have a label (on CPU;
  TRL does it on Triton devices already). SFT and DPO, where prompts are a third or more of the tokens.
- `use_fast_cpu_dropout(model)`: LoRA dropout masks from a fast generator on CPU (`FastCpuDropout`).

LoRA dropout on CPU: PEFT puts an `nn.Dropout` before every LoRA adapter (`lora_dropout`, 0.05 by default), 7 per
layer with `all-linear`, each on the full input of its layer. torch draws the mask with `bernoulli_` on its
Mersenne-Twister generator at about 90 M values/s: measured here, 11 % of a SmolLM2-135M LoRA step
(`aten::bernoulli_`, 3.1 s of 26.7 s in a torch profile of a batch of 8×261 tokens on 2 cores).
`FastCpuDropout` draws the same Bernoulli(1 - p) keep-mask from numpy's SFC64 generator, 16 random bits per
element (p rounded to a multiple of 2⁻¹⁶: 0.05 becomes 0.050003), 15 ms → 4 ms for a 800×1536 input, seeded for
every call from torch's own generator, so a run is reproducible for a seed and a resumed run (HF restores torch's
RNG state) draws what the uninterrupted one would. Inverted dropout as torch does it: kept values are scaled by
1 / (1 - p), nothing happens in eval mode, and the backward keeps a boolean mask (1 byte a value, where torch's
dropout keeps a float one). Other devices use torch's dropout unchanged. The saved adapter is unchanged (its
`lora_dropout` stays in adapter_config.json); only the modules of the running model are swapped. SFT with
`engine.packing: false` keeps torch's dropout, whose draws a plain TRL script shares
(`tests/trainers/test_parity.py` compares their losses step by step).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from felix_train.data.grouping import length_grouped_order

_BITS = 16
_LOW = -(1 << (_BITS - 1))  # the int16 values are uniform in [-2^15, 2^15)


class FastCpuDropout(nn.Dropout):
    """`nn.Dropout(p)` whose CPU masks come from numpy's SFC64 generator, seeded from torch's generator."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)
        # keep a value when its 16 random bits (as int16) are >= this: P(drop) = round(p * 2^16) / 2^16
        self._threshold = _LOW + round(p * (1 << _BITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return super().forward(x)
        seed = int(torch.randint(0, 2**62, (1,)))  # torch's generator: seeded runs repeat, resumes continue
        n = x.numel()
        raw = np.random.SFC64(seed).random_raw((n + 3) // 4)  # 64 random bits -> four int16 draws
        keep = torch.from_numpy(raw.view(np.int16)[:n]).view(x.shape) >= self._threshold
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


def use_fast_cpu_dropout(model: nn.Module) -> int:
    """Swap every LoRA `nn.Dropout` of `model` (PEFT's `lora_dropout` ModuleDicts) for `FastCpuDropout`.

    Returns how many were swapped (0 when the adapters have no dropout: PEFT puts `nn.Identity` there).
    """
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is nn.Dropout and dropout.p > 0:
                fast = FastCpuDropout(dropout.p)
                fast.train(dropout.training)
                dropouts[name] = fast
                swapped += 1
    return swapped


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
