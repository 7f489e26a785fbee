"""The LLM trainers' speed-ups keep the semantics: fast CPU dropout, length-grouped orders."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from felix_train.data.grouping import length_grouped_order
from felix_train.trainers.fast_dropout import FastCpuDropout, use_fast_cpu_dropout
from felix_train.trainers.lm_speed import LengthGroupedEpochSampler


def test_fast_dropout_drops_p_of_the_values_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    out = FastCpuDropout(0.05).train()(x)
    dropped = (out == 0).float().mean().item()
    n = x.numel()
    assert abs(dropped - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n), dropped  # 4 sigma of a binomial
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.95))


def test_fast_dropout_masks_differ_per_call_and_repeat_per_seed():
    x = torch.randn(64, 96)
    layer = FastCpuDropout(0.3).train()
    torch.manual_seed(7)
    a, b = layer(x), layer(x)
    torch.manual_seed(7)
    a2 = layer(x)
    assert torch.equal(a, a2)
    assert not torch.equal(a == 0, b == 0)


def test_fast_dropout_gradient_is_the_mask_times_the_scale_and_eval_is_identity():
    torch.manual_seed(1)
    x = torch.randn(32, 48, requires_grad=True)
    layer = FastCpuDropout(0.2).train()
    out = layer(x)
    out.sum().backward()
    expected = (out != 0).float() / 0.8
    assert torch.allclose(x.grad, expected)
    layer.eval()
    assert layer(x) is x


def test_swaps_every_dropout_module_of_a_peft_model():
    from peft import LoraConfig, get_peft_model

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.drop = nn.Dropout(0.1)  # the base model's own: swapped too
            self.off = nn.Dropout(0.0)  # p = 0: left alone

        def forward(self, x):
            return self.b(self.drop(self.a(x)))

    model = get_peft_model(Tiny(), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["a", "b"]))
    assert use_fast_cpu_dropout(model) == 3
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.Dropout)]
    assert kinds.count(FastCpuDropout) == 3 and kinds.count(nn.Dropout) == 1
    model.train()
    model(torch.randn(4, 8)).sum().backward()  # trains through the swapped modules
    no_dropout = get_peft_model(Tiny(), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["a"]))
    assert use_fast_cpu_dropout(no_dropout) == 1  # PEFT puts nn.Identity in lora_dropout: only `drop` is swapped


def _padding(order, lengths, batch):
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths)


def test_grouped_order_is_a_permutation_with_less_padding_and_the_longest_batch_first():
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(10, 500, (96,), generator=g).tolist()
    default = length_grouped_order(lengths, 8, generator=torch.Generator().manual_seed(0))
    wide = length_grouped_order(lengths, 8, generator=torch.Generator().manual_seed(0), mega_batch_mult=50,
                                longest_first=True)
    assert sorted(default) == sorted(wide) == list(range(96))
    assert _padding(wide, lengths, 8) < 1.1 < _padding(default, lengths, 8)
    assert max(lengths) in [lengths[i] for i in wide[:8]]


def test_sampler_order_depends_on_seed_and_epoch_only():
    lengths = [(i * 37) % 211 + 5 for i in range(50)]
    s1, s2 = LengthGroupedEpochSampler(lengths, 4, seed=42), LengthGroupedEpochSampler(lengths, 4, seed=42)
    assert list(s1) == list(s2)
    first = list(s1)
    s1.set_epoch(1)
    assert list(s1) != first and sorted(s1) == sorted(first)


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_threshold_rounds_p_to_sixteen_bits(p):
    layer = FastCpuDropout(p)
    assert abs((layer._threshold + 2**15) / 2**16 - p) <= 2**-17
