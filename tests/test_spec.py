"""The job spec: every API rule, table-driven, each with its exact `loc` and error `type`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from felix_train.errors import SpecError
from felix_train.rl_config import FELIX_KEYS, DPOParams, GRPOParams
from felix_train.spec import load_spec, load_spec_file, spec_from_json, validate_spec

GLINER = "felix/tiny-gliner2"
LLM = "felix/tiny-llm"
NOT_RL = "Qwen/Qwen2.5-0.5B-Instruct"


def base(**over) -> dict:
    spec = {"base_model": GLINER, "datasets": [{"name": "ner"}]}
    spec.update(over)
    return spec


def llm(**over) -> dict:
    return base(base_model=LLM, **over)


def grpo(**rl) -> dict:
    return llm(training_algorithm="grpo", rl_config={"reward_type": [{"type": "contains", "text": "42"}], **rl} if "reward_type" not in rl
               else rl, engine={"batch_size": 8})


# (id, spec, expected loc, expected type)
INVALID = [
    ("missing-base-model", {"datasets": [{"name": "x"}]}, ("base_model",), "missing"),
    ("missing-datasets", {"base_model": GLINER}, ("datasets",), "missing"),
    ("empty-datasets", base(datasets=[]), ("datasets",), "too_short"),
    ("dataset-not-object", base(datasets=["ner"]), ("datasets", 0), "model_type"),
    ("dataset-missing-name", base(datasets=[{}]), ("datasets", 0, "name"), "missing"),
    ("dataset-extra-key", base(datasets=[{"name": "a", "split": "train"}]), ("datasets", 0, "split"), "extra_forbidden"),
    ("dataset-traversal", base(datasets=[{"name": "../etc"}]), ("datasets", 0, "name"), "string_pattern_mismatch"),
    ("unknown-top-key", base(learning_rat=0.1), ("learning_rat",), "extra_forbidden"),
    ("unknown-engine-key", base(engine={"sed": 1}), ("engine", "sed"), "extra_forbidden"),
    ("unknown-lora-key", base(engine={"lora": {"rank": 8}}), ("engine", "lora", "rank"), "extra_forbidden"),
    ("unknown-base-model", base(base_model="bert-base-uncased"), ("base_model",), "unknown_base_model"),
    ("empty-base-model", base(base_model=""), ("base_model",), "string_too_short"),
    ("unknown-checkpoint-uuid", base(base_model="3f2b8c1e-1111-4222-8333-944455556666"), ("base_model",), "unknown_checkpoint"),
    ("bad-training-type", base(training_type="qlora"), ("training_type",), "enum"),
    ("bad-algorithm", base(training_algorithm="ppo"), ("training_algorithm",), "enum"),
    ("full-on-llm", llm(training_type="full"), ("training_type",), "training_type_not_allowed"),
    ("full-on-qwen", base(base_model=NOT_RL, training_type="full"), ("training_type",), "training_type_not_allowed"),
    ("lr-zero", base(learning_rate=0), ("learning_rate",), "greater_than"),
    ("lr-negative", base(learning_rate=-1e-4), ("learning_rate",), "greater_than"),
    ("lr-huge", base(learning_rate=3.0), ("learning_rate",), "less_than_equal"),
    ("lr-string", base(learning_rate="fast"), ("learning_rate",), "float_parsing"),
    ("epochs-zero", base(num_epochs=0), ("num_epochs",), "greater_than_equal"),
    ("epochs-float", base(num_epochs=1.5), ("num_epochs",), "int_from_float"),
    ("bad-name", base(name="../../x"), ("name",), "string_pattern_mismatch"),
    ("rl-config-on-sft", base(rl_config={"beta": 0.1}), ("rl_config",), "rl_config_forbidden"),
    ("dpo-without-rl-config", llm(training_algorithm="dpo"), ("rl_config",), "rl_config_required"),
    ("grpo-without-rl-config", llm(training_algorithm="grpo"), ("rl_config",), "rl_config_required"),
    ("grpo-without-reward-type", llm(training_algorithm="grpo", rl_config={"beta": 0.0}), ("rl_config", "reward_type"), "reward_type_required"),
    ("dpo-not-rl-verified", base(base_model=NOT_RL, training_algorithm="dpo", rl_config={}), ("training_algorithm",), "model_not_rl_verified"),
    ("grpo-not-rl-verified", base(base_model=NOT_RL, training_algorithm="grpo", rl_config={"reward_type": "contains"}), ("training_algorithm",), "model_not_rl_verified"),
    ("dpo-on-gliner", base(training_algorithm="dpo", rl_config={}), ("training_algorithm",), "model_not_rl_verified"),
    ("dpo-unknown-key", llm(training_algorithm="dpo", rl_config={"betta": 0.1}), ("rl_config", "betta"), "extra_forbidden"),
    ("dpo-beta-zero", llm(training_algorithm="dpo", rl_config={"beta": 0}), ("rl_config", "beta"), "greater_than"),
    ("dpo-bad-loss-type", llm(training_algorithm="dpo", rl_config={"loss_type": "dpo++"}), ("rl_config", "loss_type"), "literal_error"),
    ("dpo-label-smoothing", llm(training_algorithm="dpo", rl_config={"label_smoothing": 0.7}), ("rl_config", "label_smoothing"), "less_than"),
    ("dpo-loss-weights-mismatch", llm(training_algorithm="dpo", rl_config={"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}), ("rl_config", "loss_weights"), "value_error"),
    ("grpo-num-generations-1", grpo(num_generations=1), ("rl_config", "num_generations"), "greater_than_equal"),
    ("grpo-batch-not-divisible", grpo(num_generations=3), ("engine", "batch_size"), "batch_not_divisible"),
    ("grpo-gen-batch-not-divisible", grpo(num_generations=4, generation_batch_size=10), ("rl_config", "generation_batch_size"), "batch_not_divisible"),
    ("grpo-both-batch-knobs", grpo(generation_batch_size=16, steps_per_generation=2), ("rl_config", "steps_per_generation"), "value_error"),
    ("grpo-temperature-zero", grpo(temperature=0), ("rl_config", "temperature"), "greater_than"),
    ("grpo-epsilon-high-below", grpo(epsilon=0.2, epsilon_high=0.1), ("rl_config", "epsilon_high"), "value_error"),
    ("grpo-bad-loss-type", grpo(loss_type="ppo"), ("rl_config", "loss_type"), "literal_error"),
    ("grpo-bad-scale-rewards", grpo(scale_rewards="yes"), ("rl_config", "scale_rewards"), "literal_error"),
    ("grpo-unknown-key", grpo(num_generation=4), ("rl_config", "num_generation"), "extra_forbidden"),
    ("grpo-unknown-reward", grpo(reward_type="accuracy"), ("rl_config", "reward_type"), "unknown_reward_type"),
    ("batch-size-zero", base(engine={"batch_size": 0}), ("engine", "batch_size"), "greater_than_equal"),
    ("bad-length-policy", base(engine={"length_policy": "ignore"}), ("engine", "length_policy"), "enum"),
    ("max-length-tiny", base(engine={"max_length": 2}), ("engine", "max_length"), "greater_than_equal"),
    ("eval-fraction-one", base(engine={"eval": {"fraction": 1.0}}), ("engine", "eval", "fraction"), "less_than"),
    ("lora-rank-zero", base(engine={"lora": {"r": 0}}), ("engine", "lora", "r"), "greater_than_equal"),
    ("lora-dropout-one", base(engine={"lora": {"dropout": 1.0}}), ("engine", "lora", "dropout"), "less_than"),
    ("bad-report-to", base(engine={"report_to": ["comet"]}), ("engine", "report_to", 0), "enum"),
    ("bad-job-id", base(engine={"job_id": "../../etc"}), ("engine", "job_id"), "string_pattern_mismatch"),
    ("packing-on-gliner", base(engine={"packing": True}), ("engine", "packing"), "packing_not_supported"),
    ("gliner-on-fsdp", base(engine={"distributed": {"config": "fsdp", "num_processes": 2}}), ("engine", "distributed", "config"), "distributed_not_supported"),
    ("gliner-on-zero3", base(engine={"distributed": {"config": "configs/accelerate/deepspeed-zero3.yaml"}}), ("engine", "distributed", "config"), "distributed_not_supported"),
    ("gliner-bad-lora-target", base(engine={"lora": {"target_modules": ["q_proj"]}}), ("engine", "lora", "target_modules"), "lora_target_invalid"),
    ("bad-precision", base(engine={"precision": "int8"}), ("engine", "precision"), "literal_error"),
    ("num-processes-zero", base(engine={"distributed": {"num_processes": 0}}), ("engine", "distributed", "num_processes"), "greater_than_equal"),
    ("wandb-on-gliner", base(engine={"report_to": ["tensorboard", "wandb"]}), ("engine", "report_to"), "report_to_not_supported"),
    ("seed-too-big", base(engine={"seed": 99999999999999999999999}), ("engine", "seed"), "less_than"),
    ("seed-2-to-the-32", base(engine={"seed": 2**32}), ("engine", "seed"), "less_than"),
    ("accelerate-config-not-one", base(engine={"distributed": {"config": "/etc/passwd", "num_processes": 2}}), ("engine", "distributed", "config"), "accelerate_config_invalid"),
    ("accelerate-config-missing", base(engine={"distributed": {"config": "/nonexistent/ddp.yaml"}}), ("engine", "distributed", "config"), "accelerate_config_not_found"),
]


@pytest.mark.parametrize("spec,loc,typ", [pytest.param(s, l, t, id=i) for i, s, l, t in INVALID])
def test_invalid_spec_reports_field(spec, loc, typ, felix_home):
    with pytest.raises(SpecError) as info:
        validate_spec(spec, check_datasets=False)
    found = [(tuple(e.loc), e.type) for e in info.value.errors]
    assert (loc, typ) in found, f"expected {(loc, typ)} in {found}"
    for e in info.value.errors:
        assert e.msg, "every error says what is wrong"


def test_at_least_40_invalid_cases():
    assert len(INVALID) >= 40


def test_unknown_key_suggests_and_lists_valid_fields():
    with pytest.raises(SpecError) as info:
        validate_spec(base(learning_rat=0.1), check_datasets=False)
    msg = info.value.errors[0].msg
    assert "did you mean `learning_rate`" in msg and "num_epochs" in msg


def test_every_problem_reported_at_once():
    with pytest.raises(SpecError) as info:
        validate_spec(llm(training_type="full", rl_config={"beta": 0.1}), check_datasets=False)
    types = {e.type for e in info.value.errors}
    assert {"training_type_not_allowed", "rl_config_forbidden"} <= types


def test_errors_serialise_like_fastapi_422():
    with pytest.raises(SpecError) as info:
        validate_spec(base(num_epochs=0), check_datasets=False)
    body = info.value.to_list()
    assert body == [{"loc": ["num_epochs"], "msg": body[0]["msg"], "type": "greater_than_equal"}]
    json.dumps(body)


def test_defaults_filled_from_catalog_and_round_trip():
    spec = validate_spec(base(), check_datasets=False)
    assert spec.name and spec.name.startswith("tiny-gliner2-sft-")
    assert spec.num_epochs == 3 and spec.learning_rate == 2e-3
    assert spec.engine.batch_size == 8 and spec.engine.max_length == 128
    assert spec.engine.lora.alpha == 32
    data = spec.to_json()
    json.dumps(data)
    again = spec_from_json(data)
    assert again.to_json() == data


def test_explicit_values_win():
    spec = validate_spec(base(name="my job", num_epochs=7, learning_rate=1e-3, training_type="full"), check_datasets=False)
    assert (spec.name, spec.num_epochs, spec.learning_rate, spec.training_type.value) == ("my job", 7, 1e-3, "full")


def test_rl_config_defaults_follow_trl():
    spec = validate_spec(llm(training_algorithm="dpo", rl_config={}), check_datasets=False)
    assert spec.rl_config["beta"] == 0.1 and spec.rl_config["loss_type"] == "sigmoid"
    assert isinstance(spec.rl(), DPOParams)


def test_rl_defaults_match_installed_trl():
    trl = pytest.importorskip("trl")
    import dataclasses

    for ours, theirs in ((DPOParams, trl.DPOConfig), (GRPOParams, trl.GRPOConfig)):
        fields = {f.name: f for f in dataclasses.fields(theirs)}
        for name, field in ours.model_fields.items():
            if name in FELIX_KEYS:
                continue
            assert name in fields, f"{ours.__name__}.{name} is not a TRL {theirs.__name__} field"
            f = fields[name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, list) and len(default) == 1:
                default = default[0]
            assert field.default == default, f"{name}: ours {field.default!r} vs TRL {default!r}"


def test_grpo_batch_message_says_what_to_change():
    with pytest.raises(SpecError) as info:
        validate_spec(grpo(num_generations=3), check_datasets=False)
    msg = next(e.msg for e in info.value.errors if e.type == "batch_not_divisible")
    assert "num_generations (3)" in msg and "engine.batch_size" in msg


def test_valid_grpo_spec():
    spec = validate_spec(grpo(num_generations=4), check_datasets=False)
    assert spec.rl().num_generations == 4


def test_yaml_parse_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base_model: x\ndatasets: [\n  - {name: a\n")
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert "line" in info.value.errors[0].msg and info.value.errors[0].type == "yaml_invalid"


def test_json_and_yaml_load(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(base()))
    (tmp_path / "s.yaml").write_text("base_model: felix/tiny-gliner2\ndatasets:\n  - name: ner\n")
    for name in ("s.json", "s.yaml"):
        assert load_spec(tmp_path / name, check_datasets=False).base_model == GLINER


def test_validate_cli_never_imports_a_heavy_library(tmp_path, felix_home):
    """What keeps `validate` fast (its wall time is a `make bench` line, not a timed test: it failed at 1.0-1.8 s
    on a loaded machine): none of torch, transformers, trl, peft, gliner2, datasets is imported."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        base_model: felix/tiny-gliner2
        datasets: [{name: ner}]
    """))
    code = textwrap.dedent(f"""
        import sys
        from felix_train.cli import main
        rc = main(["validate", "--no-datasets", {str(spec)!r}])
        assert rc == 0, rc
        heavy = {{"torch", "transformers", "trl", "peft", "gliner2", "datasets", "accelerate"}} & set(sys.modules)
        assert not heavy, f"validate imported {{sorted(heavy)}}"
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ})
    assert out.returncode == 0, out.stderr


# -- rules that read the dataset registry -------------------------------------------------

@pytest.fixture
def registry(felix_home, tmp_path):
    from felix_train.data.registry import DatasetRegistry

    reg = DatasetRegistry(felix_home)
    ner = tmp_path / "ner.jsonl"
    ner.write_text(json.dumps({"input": "Ada lives in Paris", "output": {"entities": {"person": ["Ada"], "location": ["Paris"]}}}) + "\n")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    reg.add("ner", ner)
    reg.add("chat", chat)
    reg.add("math", math)
    reg.add("broken", broken)
    return reg


DATASET_INVALID = [
    ("dataset-missing", base(datasets=[{"name": "nope"}]), ("datasets", 0, "name"), "dataset_not_found"),
    ("dataset-failed", base(datasets=[{"name": "ner"}, {"name": "broken"}]), ("datasets", 1, "name"), "dataset_not_ready"),
    ("dataset-wrong-format", base(datasets=[{"name": "chat"}]), ("datasets", 0, "name"), "dataset_format_mismatch"),
    ("sft-data-for-dpo", llm(datasets=[{"name": "chat"}], training_algorithm="dpo", rl_config={}), ("datasets", 0, "name"), "dataset_format_mismatch"),
    ("eval-dataset-missing", base(engine={"eval": {"dataset": "gone"}}), ("engine", "eval", "dataset"), "dataset_not_found"),
    ("reward-column-missing", llm(datasets=[{"name": "math"}], training_algorithm="grpo", engine={"batch_size": 8},
                                   rl_config={"reward_type": [{"type": "exact_match", "column": "solution"}]}),
     ("rl_config", "reward_type", 0, "column"), "reward_column_missing"),
]


@pytest.mark.parametrize("spec,loc,typ", [pytest.param(s, l, t, id=i) for i, s, l, t in DATASET_INVALID])
def test_dataset_rules(spec, loc, typ, registry, felix_home):
    with pytest.raises(SpecError) as info:
        validate_spec(spec, home=felix_home)
    found = [(tuple(e.loc), e.type) for e in info.value.errors]
    assert (loc, typ) in found, f"expected {(loc, typ)} in {found}"


def test_valid_specs_with_registry(registry, felix_home):
    assert validate_spec(base(), home=felix_home).datasets[0].name == "ner"
    grpo_ok = llm(datasets=[{"name": "math"}], training_algorithm="grpo", engine={"batch_size": 8},
                  rl_config={"reward_type": "numeric_match", "num_generations": 4})
    assert validate_spec(grpo_ok, home=felix_home).rl().num_generations == 4


def test_validate_cli_exit_codes(registry, felix_home, tmp_path, capsys):
    from felix_train.cli import main

    good = tmp_path / "good.json"
    good.write_text(json.dumps(base()))
    assert main(["validate", str(good)]) == 0
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(base(datasets=[{"name": "nope"}])))
    assert main(["validate", str(missing)]) == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(base(num_epochs=0)))
    capsys.readouterr()
    assert main(["validate", "--json", str(bad)]) == 2
    assert json.loads(capsys.readouterr().out)["detail"][0]["loc"] == ["num_epochs"]


def test_llm_accepts_every_tracker():
    spec = validate_spec(llm(engine={"report_to": ["tensorboard", "wandb", "mlflow"]}), check_datasets=False)
    assert [r.value for r in spec.engine.report_to] == ["tensorboard", "wandb", "mlflow"]


def test_checkpoint_of_a_model_no_longer_in_the_catalog_is_a_spec_error(felix_home):
    """Once an `assert`: a checkpoint whose base model left the catalog is a 422 item, not an AssertionError."""
    uuid = "3f2b8c1e-1111-4222-8333-944455556666"
    folder = felix_home / "jobs" / "old-job" / "checkpoints" / uuid
    folder.mkdir(parents=True)
    (folder / "checkpoint.json").write_text(json.dumps({
        "uuid": uuid, "job_id": "old-job", "step": 3, "created_at": "2024-01-01T00:00:00+00:00",
        "base_model": "felix/retired-model", "training_type": "lora", "family": "gliner2"}))
    with pytest.raises(SpecError) as info:
        validate_spec(base(base_model=uuid), check_datasets=False)
    found = [(tuple(e.loc), e.type) for e in info.value.errors]
    assert found == [(("base_model",), "checkpoint_base_model_unknown")]
    assert "felix/retired-model" in info.value.errors[0].msg


def test_entry_of_a_stored_spec_whose_model_left_the_catalog_is_a_spec_error():
    """Once an `assert` (skipped under `python -O`): `entry()` raises a SpecError naming the model."""
    stored = validate_spec(base(), check_datasets=False).to_json()
    stored["catalog_model"] = "felix/retired-model"
    spec = spec_from_json(stored)
    with pytest.raises(SpecError, match="felix/retired-model") as info:
        spec.entry()
    assert info.value.errors[0].type == "unknown_base_model"


# -- issue 16: validation gaps that failed only at run time; files that are not UTF-8 --------------------------------

def test_the_largest_seed_numpy_and_torch_accept_is_valid():
    assert validate_spec(base(engine={"seed": 2**32 - 1}), check_datasets=False).engine.seed == 2**32 - 1


def test_an_accelerate_config_needs_a_distributed_type(tmp_path):
    """#4: a file that is not an accelerate config is refused at validation, saying what one looks like."""
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("num_processes: 2\n")
    with pytest.raises(SpecError) as info:
        validate_spec(base(engine={"distributed": {"config": str(cfg)}}), check_datasets=False)
    (item,) = info.value.errors
    assert item.type == "accelerate_config_invalid" and "`distributed_type`" in item.msg and str(cfg) in item.msg
    cfg.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\n")
    assert validate_spec(base(engine={"distributed": {"config": str(cfg)}}), check_datasets=False)


@pytest.mark.parametrize("name,text,line", [
    ("s.yaml", "base_model: felix/tiny-gliner2\ndatasets: [{name: ner}]\nengine:\n  seed: 1\n  seed: 2\n", 5),
    ("s.yaml", "base_model: felix/tiny-gliner2\ndatasets: [{name: ner}]\nbase_model: felix/tiny-llm\n", 3),
    ("s.json", '{"base_model": "felix/tiny-gliner2",\n "datasets": [{"name": "ner"}],\n "engine": {"seed": 1,\n'
               '  "seed": 2}}', 4),
])
def test_duplicate_keys_in_a_spec_are_refused_with_the_line(tmp_path, name, text, line):
    """#4: a key twice in one mapping (YAML or JSON) is refused with its line and the key, not last-wins."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    (item,) = info.value.errors
    key = "seed" if "seed: 2" in text or '"seed": 2' in text else "base_model"
    assert item.type == "duplicate_key" and f"duplicate key `{key}` at line {line}" in item.msg, item.msg


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("x: &e {seed: 1}\nbase_model: felix/tiny-gliner2\ndatasets: [{name: ner}]\n"
                    "engine: {<<: *e, seed: 2}\n")
    assert load_spec_file(path)["engine"] == {"seed": 2}


def test_a_spec_file_that_is_not_utf8_is_a_spec_error(tmp_path):
    """#3: a Latin-1 spec: SpecError naming the file, the byte and the line (not a UnicodeDecodeError)."""
    path = tmp_path / "s.yaml"
    path.write_bytes("name: r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    (item,) = info.value.errors
    assert item.type == "encoding_invalid" and f"{path}: not UTF-8 at byte 7 (line 1: 0xe9)" in item.msg


def test_rl_jobs_take_the_catalogs_per_algorithm_learning_rate_and_rl_defaults(monkeypatch):
    from felix_train import catalog

    entry = catalog.get_entry(LLM)
    monkeypatch.setattr(entry, "algorithm_learning_rate", {"dpo": 7e-4})
    monkeypatch.setattr(entry, "rl_defaults", {"dpo": {"beta": 0.25}})
    dpo = validate_spec(llm(training_algorithm="dpo", rl_config={}), check_datasets=False)
    assert dpo.learning_rate == 7e-4 and dpo.rl_config["beta"] == 0.25
    mine = validate_spec(llm(training_algorithm="dpo", rl_config={"beta": 0.5}, learning_rate=1e-5), check_datasets=False)
    assert mine.learning_rate == 1e-5 and mine.rl_config["beta"] == 0.5  # the spec's own values win
    sft = validate_spec(llm(), check_datasets=False)
    assert sft.learning_rate == entry.default_learning_rate[sft.training_type]


def test_gliner2_encoder_learning_rate_is_resolved_from_the_catalogs_ratio(monkeypatch):
    from felix_train import catalog

    entry = catalog.get_entry(GLINER)
    monkeypatch.setattr(entry, "encoder_lr_ratio", {catalog.TrainingType.LORA: 0.5, catalog.TrainingType.FULL: 0.05})
    lora = validate_spec(base(learning_rate=2e-3), check_datasets=False)
    assert lora.engine.encoder_learning_rate == pytest.approx(1e-3)
    full = validate_spec(base(training_type="full"), check_datasets=False)
    assert full.engine.encoder_learning_rate == pytest.approx(full.learning_rate * 0.05)
    assert full.hyperparameters()["encoder_learning_rate"] == full.engine.encoder_learning_rate
    mine = validate_spec(base(engine={"encoder_learning_rate": 3e-5}), check_datasets=False)
    assert mine.engine.encoder_learning_rate == 3e-5  # the spec's own value wins
    assert validate_spec(llm(), check_datasets=False).engine.encoder_learning_rate is None  # not a GLiNER2 setting


def test_gliner2_entity_free_share_is_resolved_from_the_catalog(monkeypatch):
    from felix_train import catalog

    assert validate_spec(base(), check_datasets=False).engine.entity_free_share == 1.0  # the tiny model: every record
    monkeypatch.setattr(catalog.get_entry(GLINER), "default_entity_free_share", 0.25)
    resolved = validate_spec(base(), check_datasets=False)
    assert resolved.engine.entity_free_share == 0.25 and resolved.hyperparameters()["entity_free_share"] == 0.25
    assert validate_spec(base(engine={"entity_free_share": 1}), check_datasets=False).engine.entity_free_share == 1
    assert validate_spec(llm(), check_datasets=False).engine.entity_free_share is None  # not an LLM setting
    with pytest.raises(SpecError) as err:
        validate_spec(base(engine={"entity_free_share": 0}), check_datasets=False)
    assert err.value.errors[0].loc == ("engine", "entity_free_share")
