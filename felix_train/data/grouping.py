"""Length-grouped epoch orders, shared by the SFT sampler and the GLiNER2 loop.

`length_grouped_order(lengths, batch_size, generator=...)` is transformers' `get_length_grouped_indices` (what
`group_by_length` uses: a seeded permutation cut into mega-batches, each sorted by length, so a batch holds
records of similar length and pads little) with its full batches then put in random order: a mega-batch alone
runs from its longest batch to its shortest, a curriculum nobody asked for (it cost GLiNER2 0.04 F1). The short
last batch stays last. Every record is seen once per epoch, as with a plain shuffle.

`mega_batch_mult` is how many batches a mega-batch holds: transformers' default (`None`) is 50, or fewer so that
the data makes 4 mega-batches; with a few hundred records that leaves mega-batches of 16-24 records and batches
that are still a third padding (a SmolLM2 batch of 8 dolly chats: 2,088 token slots for 1,306 real tokens).
`longest_first` moves the batch holding the longest record to the front, as transformers does, so a batch that
does not fit in memory fails at the first step rather than hours in.

torch is imported by the function, not at import.
"""

from __future__ import annotations

from typing import Any


def length_grouped_order(lengths: list[int], batch_size: int, *, generator: Any, mega_batch_mult: int | None = None,
                         longest_first: bool = False) -> list[int]:
    """Indices into `lengths`: batches of `batch_size` similar lengths, in a random order drawn from `generator`."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    grouped = get_length_grouped_indices(lengths, batch_size, mega_batch_mult=mega_batch_mult, generator=generator)
    batches = [grouped[i:i + batch_size] for i in range(0, len(grouped), batch_size)]
    last = batches.pop() if batches and len(batches[-1]) < batch_size else None
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    if longest_first and batches:
        top = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(top))
    return [i for batch in batches + ([last] if last else []) for i in batch]
