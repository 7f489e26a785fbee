"""flops: the formulas against hand-computed numbers, and the 6N part against transformers' own count."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from felix_train.perf.flops import (ModelShape, dpo_flops, full_training_flops, generation_flops, lora_params,
                                    lora_training_flops, non_embedding_params, training_flops)

# L=2, d=64, d_ff=128, 4 heads of 16, 2 KV heads (kv width 32), V=100, tied embeddings
TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True)
# per layer: q 64·64 + k 64·32 + v 64·32 + o 64·64 = 12,288; MLP 3·64·128 = 24,576; 2 norms 128 -> 36,992
N_TINY = 2 * 36_992 + 64  # + final norm = 74,048
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)


def test_non_embedding_params_by_hand():
    assert non_embedding_params(TINY) == N_TINY == 74_048
    assert non_embedding_params({**TINY, "tie_word_embeddings": False}) == N_TINY + 100 * 64  # lm_head in N
    # SmolLM2-135M: 30 · (576·1536 attention + 3·576·1536 MLP + 2·576) + 576
    assert non_embedding_params(SMOLLM2_135M) == 30 * (576 * 1536 + 3 * 576 * 1536 + 2 * 576) + 576 == 106_203_456


def test_full_training_by_hand():
    f = full_training_flops(TINY, seq_len=32)
    assert f.parts == {"dense_6n": 6 * 74_048, "attention": 12 * 2 * 64 * 32, "logits": 6 * 100 * 64}
    assert f.total == 444_288 + 49_152 + 38_400 == 531_840
    assert "6N" in f.formula and "12·L·d_attn·T" in f.formula
    assert f.to_json()["flops_per_token"] == 531_840


def test_lora_by_hand():
    # r=4 on all seven linears: 4 · (128 + 96 + 96 + 128 + 192 + 192 + 192) = 4,096 per layer
    assert lora_params(TINY, 4) == 8_192
    assert lora_params(TINY, 4, ["q_proj", "v_proj"]) == 2 * 4 * (128 + 96)
    f = lora_training_flops(TINY, 32, r=4)
    assert f.parts == {"base_4n": 4 * 74_048, "adapters_6n": 6 * 8_192, "attention": 49_152, "logits": 4 * 6_400}
    assert f.total == 420_096
    assert f.total < full_training_flops(TINY, 32).total  # no weight gradients for the frozen base
    assert lora_training_flops(TINY, 32, n_lora=8_192).total == f.total
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora_params(TINY, 4, ["qkv"])
    with pytest.raises(ValueError, match="adapter size"):
        lora_training_flops(TINY, 32)


def test_dpo_and_generation_by_hand():
    ref = 2 * 74_048 + 4 * 2 * 64 * 32 + 2 * 6_400  # 177,280
    assert generation_flops(TINY, 32).total == ref
    assert dpo_flops(TINY, 32, r=4).total == 420_096 + ref
    assert dpo_flops(TINY, 32, r=4, precompute_ref_log_probs=True).total == 420_096
    assert dpo_flops(TINY, 32, training_type="full").total == 531_840 + ref


def test_training_flops_dispatch():
    assert training_flops("sft", "lora", TINY, 32, r=4).total == 420_096
    assert training_flops("grpo", "full", TINY, 32).total == 531_840
    assert training_flops("grpo", "lora", TINY, 32, r=4, reference_forward=True).total == 420_096 + 177_280
    dpo = training_flops("dpo", "lora", TINY, 32, r=4)
    assert dpo.total == 597_376 and dpo.formula.startswith("dpo:")
    assert training_flops("dpo", "lora", TINY, 32, r=4, reference_forward=False).total == 420_096
    with pytest.raises(ValueError, match="algorithm must be one of"):
        training_flops("ppo", "lora", TINY, 32, r=4)
    with pytest.raises(ValueError, match="training_type"):
        training_flops("sft", "qlora", TINY, 32, r=4)


def test_config_without_the_keys_is_refused():
    with pytest.raises(ValueError, match="intermediate_size"):
        ModelShape.from_config({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4})


def _hf_six_n(config_kwargs: dict, tokens: int) -> tuple[int, int]:
    """(transformers' N without embeddings, HF Trainer's floating_point_ops for `tokens` tokens)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(**config_kwargs)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    n = model.num_parameters(exclude_embeddings=True)
    ops = transformers.Trainer.floating_point_ops(SimpleNamespace(model=model),
                                                  {"input_ids": torch.zeros(1, tokens, dtype=torch.long)})
    return n, ops


@pytest.mark.parametrize("tied", [True, False])
def test_six_n_matches_transformers_on_a_tiny_llama(tied):
    cfg = {**TINY, "tie_word_embeddings": tied}
    n, ops = _hf_six_n(cfg, tokens=32)
    assert non_embedding_params(cfg) == n
    assert full_training_flops(cfg, 32).parts["dense_6n"] * 32 == ops


def test_smollm2_135m_against_transformers():
    pytest.importorskip("transformers")
    import transformers

    config = transformers.LlamaConfig(**SMOLLM2_135M)
    n, ops = _hf_six_n(SMOLLM2_135M, tokens=1)
    assert non_embedding_params(config) == n == 106_203_456
    full = full_training_flops(config, seq_len=512)
    assert full.parts["dense_6n"] == ops == pytest.approx(0.637e9, rel=1e-3)  # TRL's total_flos per token
    # The issue's ~0.94 GFLOP/token is TRL's 6N·(padded tokens, LoRA params included) divided by real
    # tokens; counted honestly per real token, full training at T=512 is 0.91 and LoRA r=16 0.67 GFLOP.
    assert full.total == pytest.approx(0.913e9, rel=1e-3)
    assert lora_training_flops(config, 512, r=16).total == pytest.approx(0.674e9, rel=1e-3)


def test_encoder_training_flops_counts_trained_6n_frozen_4n_and_attention():
    from felix_train.perf.flops import encoder_training_flops

    full = encoder_training_flops(n_frozen=0, n_trainable=1000, n_layer=2, d_attn=8, seq_len=10)
    assert full.parts == {"frozen_4n": 0.0, "trained_6n": 6000.0, "attention": 12.0 * 2 * 8 * 10}
    assert full.total == 6000 + 1920
    lora = encoder_training_flops(n_frozen=1000, n_trainable=50, n_layer=2, d_attn=8, seq_len=10)
    assert lora.total == 4000 + 300 + 1920 and lora.total < full.total + 300
    assert "4·N_frozen" in lora.formula


def test_gliner2_step_throughput_reports_samples_per_s_and_mfu():
    from felix_train.trainers.gliner2.perf import WARMUP_STEPS, StepThroughput

    t = StepThroughput(n_frozen=0, n_trainable=1000, n_layer=2, d_attn=8, peak_flops=1e6)
    first = t.step(8, 80, 2.0)  # 8 samples of 10 tokens in 2 s
    per_token = 6000 + 12 * 2 * 8 * 10
    assert first["samples_per_s"] == 4.0
    assert first["achieved_tflops"] == round(80 * per_token / 2.0 / 1e12, 6)
    assert first["mfu"] == round(80 * per_token / 2.0 / 1e6, 4)
    for _ in range(WARMUP_STEPS):
        t.step(8, 80, 1.0)
    assert t.summary()["samples_per_s"] == 8.0  # the warm-up steps left out
    unknown = StepThroughput(n_frozen=0, n_trainable=1, n_layer=None, d_attn=None, peak_flops=None)
    assert unknown.step(4, 40, 1.0) == {"samples_per_s": 4.0} and unknown.summary() == {"samples_per_s": 4.0}
