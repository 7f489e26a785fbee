"""FLOPs per token for decoder LLM and encoder (GLiNER2) training, from the model's config alone (no model is built).

The formulas (each result says which one it used in `FlopsPerToken.formula`):

- **Full training** (Kaplan et al. 2020, "Scaling Laws", sec. 2.1; PaLM, Chowdhery et al. 2022, app. B):
  `6N + 12·L·d_attn·T` per token. N = non-embedding parameters (counted as transformers'
  `num_parameters(exclude_embeddings=True)` does: an untied `lm_head` is in N, the embedding is not),
  L layers, d_attn = heads × head_dim, T the sequence length attended over. 6N = forward 2N + backward 4N
  (input gradients 2N, weight gradients 2N); the attention term is the QKᵀ and AV matmuls, forward
  4·L·d_attn·T, times 3 for training. With tied embeddings the output projection is not in N but is
  still computed, so it is added as its own part (`logits`: 6·V·d, or 4·V·d when it gets no weight
  gradient), and the dense `6N` part stays equal to transformers' / TRL's `floating_point_ops`.
- **LoRA**: the frozen base still pays its forward (2N) and the backward through activations (2N, the
  input gradients that reach lower layers' adapters), but not the weight gradients: 4N. The adapters add
  6·N_lora (forward, input and weight gradients of rank-r A and B). Attention has no weights: 12·L·d_attn·T.
- **DPO**: the policy's training cost per token (full or LoRA) plus the reference model's forward
  (2N + 4·L·d_attn·T), unless the reference log-probs are precomputed. Both chosen and rejected tokens count.
- **Generation** (GRPO rollouts, KV cache): 2N + 2·V·d (if tied) + 4·L·d_attn·T_ctx per generated token,
  T_ctx the mean context length attended over (prompt + tokens generated so far).
- **Encoder** (GLiNER2, `encoder_training_flops`): per input token 4·N_frozen + 6·N_trained + 12·L·d_attn·T,
  the same per-parameter counting (full training: 6N; LoRA: the frozen encoder 4N, adapters and heads
  trained in full 6N).

Inputs are a transformers config (`num_hidden_layers`, `hidden_size`, `intermediate_size`,
`num_attention_heads`, `num_key_value_heads`, `vocab_size`, `tie_word_embeddings`, optional `head_dim`,
`attention_bias`, `mlp_bias`), a mapping with the same keys, a `ModelShape`, or plain numbers through
`ModelShape(...)`. The MLP is the gated (SwiGLU) one of Llama, Qwen2, Mistral, SmolLM2: three d×d_ff
matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The per-layer linear modules of a Llama-style decoder; PEFT's `all-linear` adapts all of them."""


@dataclass(frozen=True)
class ModelShape:
    """The numbers the formulas need. `head_dim` defaults to d_model / n_heads."""

    n_layer: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int | None = None
    vocab_size: int = 0
    tied_embeddings: bool = True
    head_dim: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False

    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def d_attn(self) -> int:
        """Width of the attention (heads × head_dim): the `d_attn` of the attention term."""
        return self.n_heads * self.hd

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a transformers `PretrainedConfig`, a mapping of its keys, or a `ModelShape` (returned as is)."""
        if isinstance(config, ModelShape):
            return config
        get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
        missing = [k for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
                   if get(k) is None]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}: FLOPs per token need a decoder config "
                             "with num_hidden_layers, hidden_size, intermediate_size, num_attention_heads")
        model_type = get("model_type", "") or ""
        return cls(
            n_layer=int(get("num_hidden_layers")),
            d_model=int(get("hidden_size")),
            d_ff=int(get("intermediate_size")),
            n_heads=int(get("num_attention_heads")),
            n_kv_heads=get("num_key_value_heads"),
            vocab_size=int(get("vocab_size", 0) or 0),
            tied_embeddings=bool(get("tie_word_embeddings", True)),
            head_dim=get("head_dim"),
            # Qwen2 has q/k/v biases without an `attention_bias` key
            attention_bias=bool(get("attention_bias", model_type == "qwen2")),
            mlp_bias=bool(get("mlp_bias", False)),
        )

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """`{module: (in_features, out_features)}` for one layer's linears."""
        q, kv = self.d_attn, self.kv_heads * self.hd
        return {
            "q_proj": (self.d_model, q), "k_proj": (self.d_model, kv), "v_proj": (self.d_model, kv),
            "o_proj": (q, self.d_model), "gate_proj": (self.d_model, self.d_ff),
            "up_proj": (self.d_model, self.d_ff), "down_proj": (self.d_ff, self.d_model),
        }


def non_embedding_params(config: Any) -> int:
    """N: every parameter but the input embedding (an untied `lm_head` included), as transformers counts it."""
    s = ModelShape.from_config(config)
    dims = s.linear_dims()
    per_layer = sum(i * o for i, o in dims.values()) + 2 * s.d_model  # two RMSNorm weights
    if s.attention_bias:
        per_layer += dims["q_proj"][1] + dims["k_proj"][1] + dims["v_proj"][1]
    if s.mlp_bias:
        per_layer += 2 * s.d_ff + s.d_model
    n = s.n_layer * per_layer + s.d_model  # final norm
    if not s.tied_embeddings:
        n += s.vocab_size * s.d_model
    return n


def lora_params(config: Any, r: int, target_modules: str | Sequence[str] | None = "all-linear") -> int:
    """Parameters of rank-`r` LoRA adapters on `target_modules` (`all-linear` = every layer linear, not lm_head).

    Each adapted (in, out) linear gets A (in×r) and B (r×out): r·(in + out).
    """
    s = ModelShape.from_config(config)
    dims = s.linear_dims()
    if target_modules in (None, "all-linear"):
        names = list(LLAMA_LINEARS)
    else:
        names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        unknown = [n for n in names if n not in dims]
        if unknown:
            raise ValueError(f"unknown LoRA target module(s) {unknown} for FLOPs counting; "
                             f"use 'all-linear' or names from {list(LLAMA_LINEARS)}")
    return s.n_layer * r * sum(sum(dims[n]) for n in names)


@dataclass(frozen=True)
class FlopsPerToken:
    """FLOPs per token and how they were counted. `parts` sum to `total`."""

    total: float
    formula: str
    parts: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"flops_per_token": self.total, "formula": self.formula, "parts": dict(self.parts)}


def _logits_flops(s: ModelShape, passes: int) -> float:
    """The tied output projection (not in N): `passes` × V·d (2 forward, +2 input grad, +2 weight grad)."""
    return float(passes * s.vocab_size * s.d_model) if s.tied_embeddings else 0.0


def full_training_flops(config: Any, seq_len: int, *, n_params: int | None = None) -> FlopsPerToken:
    """Full fine-tuning: 6N + 12·L·d_attn·T (+ 6·V·d for a tied output projection)."""
    s = ModelShape.from_config(config)
    n = non_embedding_params(s) if n_params is None else n_params
    parts = {"dense_6n": 6.0 * n, "attention": 12.0 * s.n_layer * s.d_attn * seq_len,
             "logits": _logits_flops(s, 6)}
    return FlopsPerToken(sum(parts.values()), "full: 6N + 12·L·d_attn·T (+6·V·d tied lm_head) "
                         "[Kaplan et al. 2020; PaLM app. B]", parts)


def lora_training_flops(config: Any, seq_len: int, *, r: int | None = None,
                        target_modules: str | Sequence[str] | None = "all-linear",
                        n_lora: int | None = None, n_params: int | None = None) -> FlopsPerToken:
    """LoRA: frozen base 4N (forward + input gradients, no weight gradients) + 6·N_lora + 12·L·d_attn·T.

    Give the adapter size as `n_lora`, or as `r` and `target_modules` (counted by `lora_params`).
    """
    s = ModelShape.from_config(config)
    n = non_embedding_params(s) if n_params is None else n_params
    if n_lora is None:
        if r is None:
            raise ValueError("lora_training_flops needs the adapter size: pass r= (and target_modules=) or n_lora=")
        n_lora = lora_params(s, r, target_modules)
    parts = {"base_4n": 4.0 * n, "adapters_6n": 6.0 * n_lora,
             "attention": 12.0 * s.n_layer * s.d_attn * seq_len, "logits": _logits_flops(s, 4)}
    return FlopsPerToken(sum(parts.values()), "lora: 4N frozen base (forward + input grads) + 6·N_lora "
                         "+ 12·L·d_attn·T (+4·V·d tied lm_head)", parts)


def forward_flops(config: Any, seq_len: int, *, n_params: int | None = None) -> FlopsPerToken:
    """One forward pass (a reference model, an eval step, a prefill): 2N + 4·L·d_attn·T (+2·V·d tied)."""
    s = ModelShape.from_config(config)
    n = non_embedding_params(s) if n_params is None else n_params
    parts = {"dense_2n": 2.0 * n, "attention": 4.0 * s.n_layer * s.d_attn * seq_len, "logits": _logits_flops(s, 2)}
    return FlopsPerToken(sum(parts.values()), "forward: 2N + 4·L·d_attn·T (+2·V·d tied lm_head)", parts)


def generation_flops(config: Any, context_len: int, *, n_params: int | None = None) -> FlopsPerToken:
    """One generated token with a KV cache: 2N + 4·L·d_attn·T_ctx (+2·V·d tied), T_ctx the mean context."""
    f = forward_flops(config, context_len, n_params=n_params)
    return FlopsPerToken(f.total, "generation (KV cache): 2N + 4·L·d_attn·T_ctx (+2·V·d tied lm_head) "
                         "per generated token", f.parts)


def dpo_flops(config: Any, seq_len: int, *, training_type: str = "lora", r: int | None = None,
              target_modules: str | Sequence[str] | None = "all-linear", n_lora: int | None = None,
              precompute_ref_log_probs: bool = False) -> FlopsPerToken:
    """DPO per token of chosen and rejected sequences: the policy's training cost + the reference forward.

    The reference forward (2N + 4·L·d_attn·T) is left out when its log-probs are precomputed (then it was
    paid once, before training, and is not part of the step).
    """
    policy = (lora_training_flops(config, seq_len, r=r, target_modules=target_modules, n_lora=n_lora)
              if training_type == "lora" else full_training_flops(config, seq_len))
    parts = {f"policy_{k}": v for k, v in policy.parts.items()}
    formula = f"dpo: policy [{policy.formula}]"
    if not precompute_ref_log_probs:
        ref = forward_flops(config, seq_len)
        parts.update({f"reference_{k}": v for k, v in ref.parts.items()})
        formula += f" + reference [{ref.formula}]"
    return FlopsPerToken(sum(parts.values()), formula, parts)


def training_flops(algorithm: str, training_type: str, config: Any, seq_len: int, *, r: int | None = None,
                   target_modules: str | Sequence[str] | None = "all-linear", n_lora: int | None = None,
                   reference_forward: bool | None = None) -> FlopsPerToken:
    """FLOPs per trained token for a job's (algorithm, training_type): the one call the trainers need.

    `sft` and `grpo` (its training pass; generation is `generation_flops`) use the full or LoRA formula;
    `dpo` adds the reference forward. `reference_forward` overrides whether a reference model's forward
    is paid per token: default True for `dpo` (False when its log-probs are precomputed), False for `sft`
    and for `grpo` (TRL's default `beta=0.0` loads no reference; pass True when `beta > 0`). LoRA's adapter
    size is `n_lora` (e.g. the model's trainable parameter count) or `r` and `target_modules`.
    Raises ValueError on an unknown algorithm or training type.
    """
    if training_type not in ("lora", "full"):
        raise ValueError(f"training_type must be 'lora' or 'full', got {training_type!r}")
    if algorithm not in ("sft", "dpo", "grpo"):
        raise ValueError(f"algorithm must be one of sft, dpo, grpo, got {algorithm!r}")
    ref = (algorithm == "dpo") if reference_forward is None else reference_forward
    if ref:
        f = dpo_flops(config, seq_len, training_type=training_type, r=r, target_modules=target_modules,
                      n_lora=n_lora, precompute_ref_log_probs=False)
        return FlopsPerToken(f.total, f.formula.replace("dpo:", f"{algorithm}:", 1), f.parts)
    if training_type == "lora":
        return lora_training_flops(config, seq_len, r=r, target_modules=target_modules, n_lora=n_lora)
    return full_training_flops(config, seq_len)


def encoder_training_flops(*, n_frozen: int, n_trainable: int, n_layer: int, d_attn: int,
                           seq_len: float) -> FlopsPerToken:
    """An encoder (GLiNER2) training step per input token: 4·N_frozen + 6·N_trainable + 12·L·d_attn·T.

    The LLM formulas above, per parameter: a trained weight costs 6 FLOPs per token (forward 2, input
    gradient 2, weight gradient 2); a frozen one 4 (forward, and the input gradient the adapters below it
    need; LoRA puts adapters in every layer, so the backward runs through the whole encoder). Full
    training is N_frozen = 0: 6N. N counts every non-embedding parameter (embedding lookups are no matmuls)
    of the encoder and the task heads; the heads' matmuls run per word or span rather than per token and
    are counted per token here, an approximation (they are a few percent of N). Attention (no weights):
    QKᵀ and AV, 4·L·d_attn·T forward, ×3 for training, T the tokens attended over (text + schema prompt).
    """
    parts = {"frozen_4n": 4.0 * n_frozen, "trained_6n": 6.0 * n_trainable,
             "attention": 12.0 * n_layer * d_attn * float(seq_len)}
    return FlopsPerToken(sum(parts.values()), "encoder: 4·N_frozen + 6·N_trained + 12·L·d_attn·T per token "
                         "(full training: 6N + 12·L·d_attn·T)", parts)
