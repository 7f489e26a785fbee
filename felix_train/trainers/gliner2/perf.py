"""GLiNER2 throughput (issue 18): samples/s every step, achieved TFLOP/s and MFU from the encoder's tokens.

`StepThroughput.step(samples, tokens, seconds)` takes one optimizer step: the records it trained on, the
encoder input tokens of their batches (`attention_mask` sums: text and schema prompt, padding left out) and the
step's seconds (its micro-batches' forward/backward and the optimizer step; eval and saves left out). FLOPs
per token are `perf.flops.encoder_training_flops` with the step's mean tokens per record as the attention
length; the peak is `perf.peak.device_peak_flops` (measured once, cached). The first `WARMUP_STEPS` steps are
reported but left out of `summary()`, as `perf.mfu.Throughput` does. Figures: `samples_per_s`,
`achieved_tflops`, `mfu` (the last two absent when unknown).
"""

from __future__ import annotations

from typing import Any

from felix_train.perf.flops import encoder_training_flops
from felix_train.perf.mfu import throughput_metrics

WARMUP_STEPS = 2


class StepThroughput:
    def __init__(self, *, n_frozen: int, n_trainable: int, n_layer: int | None, d_attn: int | None,
                 peak_flops: float | None):
        self.n_frozen, self.n_trainable = n_frozen, n_trainable
        self.n_layer, self.d_attn = n_layer, d_attn
        self.peak_flops = peak_flops
        self.steps = 0
        self._totals = [0.0, 0.0, 0.0]  # samples, flops, seconds: every step
        self._steady = [0.0, 0.0, 0.0]  # the same after the warm-up

    def _flops(self, samples: float, tokens: float) -> float | None:
        if self.n_layer is None or self.d_attn is None or samples <= 0:
            return None
        per_token = encoder_training_flops(n_frozen=self.n_frozen, n_trainable=self.n_trainable, n_layer=self.n_layer,
                                           d_attn=self.d_attn, seq_len=tokens / samples)
        return per_token.total * tokens

    def _figures(self, samples: float, flops: float | None, seconds: float) -> dict[str, Any]:
        out = throughput_metrics(samples, seconds, flops / samples if flops and samples else None, self.peak_flops,
                                 unit="samples")
        return {k: v for k, v in out.items() if v is not None}

    def step(self, samples: float, tokens: float, seconds: float) -> dict[str, Any]:
        """Record one optimizer step; its figures."""
        self.steps += 1
        flops = self._flops(samples, tokens)
        for acc in (self._totals, self._steady) if self.steps > WARMUP_STEPS else (self._totals,):
            acc[0] += samples
            acc[1] += flops or 0.0
            acc[2] += seconds
        return self._figures(samples, flops, seconds)

    def summary(self) -> dict[str, Any]:
        """The figures over the steps after the warm-up (over all steps when none came after it)."""
        samples, flops, seconds = self._steady if self._steady[2] > 0 else self._totals
        return self._figures(samples, flops if self.n_layer is not None else None, seconds)


def setup_throughput(trainer) -> StepThroughput:
    """The job's `StepThroughput`: parameter counts and shape of the model, the device peak (rank 0 only)."""
    ctx = trainer.ctx
    model = trainer.model
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "embeddings" not in n)
    total = sum(p.numel() for p in model.parameters())
    config = getattr(getattr(trainer.base_model, "encoder", None), "config", None)
    n_layer = getattr(config, "num_hidden_layers", None)
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    d_attn = (getattr(config, "head_dim", None) or (hidden // heads)) * heads if heads and hidden else None
    peak = None
    if ctx.is_main_process and n_layer is not None:
        from felix_train.perf.peak import device_peak_flops

        precision = "bf16" if trainer.config.bf16 else "fp16" if trainer.config.fp16 else "fp32"
        try:
            peak = device_peak_flops(precision, ctx.device, home=str(ctx.job.home))
        except Exception as err:  # a failed measurement costs the MFU figure, never the job
            ctx.reporter.log(f"device peak not measured ({type(err).__name__}: {err}); MFU is left out", level="WARN")
        if peak:
            peak *= trainer.world
    return StepThroughput(n_frozen=total - embeddings - trainable, n_trainable=trainable, n_layer=n_layer,
                          d_attn=d_attn, peak_flops=peak)
