"""`rl_config` (DPO / GRPO) against TRL 1.16: every refused combination with its exact `loc`, `type` and a phrase
of its message, the accepted ones, and the accepted values kept in step with the installed TRL."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from felix_train.errors import SpecError
from felix_train.rl_config import (
    DPO_LOSS_TYPES,
    DPO_RENAMED_LOSS_TYPES,
    DPO_SORTING_LOSS_TYPES,
    FELIX_KEYS,
    GRPO_LOSS_TYPES,
    GRPO_SCALE_REWARDS,
    DPOParams,
    GRPOParams,
)
from felix_train.spec import validate_spec

LLM = "felix/tiny-llm"
REWARD = [{"type": "contains", "text": "42"}]


def dpo_spec(rl: dict) -> dict:
    return {"base_model": LLM, "datasets": [{"name": "prefs"}], "training_algorithm": "dpo", "rl_config": rl}


def grpo_spec(rl: dict) -> dict:
    return {"base_model": LLM, "datasets": [{"name": "prompts"}], "training_algorithm": "grpo",
            "rl_config": {"reward_type": REWARD, **rl}, "engine": {"batch_size": 8}}


# (id, model, rl_config, loc as the API reports it, type, a phrase of the message)
REFUSED = [
    # DPO: loss names (one error at `loss_type`, not one per member of `str | list[str]`)
    ("dpo-unknown-loss", "dpo", {"loss_type": "dpo++"}, ("rl_config", "loss_type"), "literal_error",
     "`loss_type` is 'dpo++', not a DPO loss of TRL 1.16; expected one of 'sigmoid'"),
    ("dpo-unknown-loss-in-list", "dpo", {"loss_type": ["sigmoid", "dpo++"]}, ("rl_config", "loss_type"),
     "literal_error", "`loss_type[1]` is 'dpo++'"),
    ("dpo-loss-not-a-name", "dpo", {"loss_type": 3}, ("rl_config", "loss_type"), "literal_error",
     "`loss_type` is 3"),
    ("dpo-empty-loss-list", "dpo", {"loss_type": []}, ("rl_config", "loss_type"), "too_short",
     "`loss_type` is an empty list"),
    ("dpo-aot-pair-renamed", "dpo", {"loss_type": "aot_pair"}, ("rl_config", "loss_type"), "loss_type_unsupported",
     "TRL 1.16 calls it 'aot_unpaired'"),
    ("dpo-aot-pair-renamed-in-list", "dpo", {"loss_type": ["sigmoid", "aot_pair"]}, ("rl_config", "loss_type"),
     "loss_type_unsupported", "set `loss_type[1]` to 'aot_unpaired'"),
    # DPO: rules between fields (TRL's DPOConfig.__post_init__ and DPOTrainer.__init__)
    ("dpo-weights-too-few", "dpo", {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]},
     ("rl_config", "loss_weights"), "value_error", "`loss_weights` has 1 value(s) but `loss_type` ['sigmoid', 'sft'] has 2"),
    ("dpo-weights-for-one-loss", "dpo", {"loss_weights": [1.0, 0.5]}, ("rl_config", "loss_weights"), "value_error",
     "set `loss_weights` to 1 number(s)"),
    ("dpo-exo-without-smoothing", "dpo", {"loss_type": "exo_pair"}, ("rl_config", "label_smoothing"),
     "label_smoothing_required", "set `label_smoothing: 0.001`"),
    ("dpo-exo-in-list-without-smoothing", "dpo", {"loss_type": ["exo_pair", "sft"], "label_smoothing": 0},
     ("rl_config", "label_smoothing"), "label_smoothing_required", "`label_smoothing` is 0"),
    ("dpo-weighting-aot", "dpo", {"loss_type": "aot", "use_weighting": True}, ("rl_config", "use_weighting"),
     "use_weighting_unsupported", "set `use_weighting: false`"),
    ("dpo-weighting-aot-unpaired-in-list", "dpo", {"loss_type": ["sigmoid", "aot_unpaired"], "use_weighting": True},
     ("rl_config", "use_weighting"), "use_weighting_unsupported", "'aot_unpaired'"),
    # DPO: ranges
    ("dpo-beta-zero", "dpo", {"beta": 0}, ("rl_config", "beta"), "greater_than", "greater than 0"),
    ("dpo-beta-inf", "dpo", {"beta": float("inf")}, ("rl_config", "beta"), "finite_number", "finite"),
    ("dpo-smoothing-half", "dpo", {"label_smoothing": 0.5}, ("rl_config", "label_smoothing"), "less_than", "0.5"),
    ("dpo-weight-nan", "dpo", {"loss_weights": [float("nan")]}, ("rl_config", "loss_weights", 0), "finite_number",
     "finite"),
    ("dpo-truncation-middle", "dpo", {"truncation_mode": "middle"}, ("rl_config", "truncation_mode"), "literal_error",
     "keep_start"),
    ("dpo-unknown-key", "dpo", {"f_divergence": "js"}, ("rl_config", "f_divergence"), "extra_forbidden",
     "unknown field"),
    # GRPO
    ("grpo-unknown-loss", "grpo", {"loss_type": "ppo"}, ("rl_config", "loss_type"), "literal_error",
     "`loss_type` is 'ppo', which is not a GRPO loss of TRL 1.16; expected one of 'grpo'"),
    ("grpo-scale-rewards-yes", "grpo", {"scale_rewards": "yes"}, ("rl_config", "scale_rewards"), "literal_error",
     "`scale_rewards` is 'yes'; expected one of 'group', 'batch', 'none'"),
    ("grpo-epsilon-high-below", "grpo", {"epsilon": 0.2, "epsilon_high": 0.1}, ("rl_config", "epsilon_high"),
     "value_error", "`epsilon_high` is 0.1 but `epsilon` is 0.2"),
    ("grpo-both-batch-knobs", "grpo", {"generation_batch_size": 16, "steps_per_generation": 2},
     ("rl_config", "steps_per_generation"), "value_error", "remove `steps_per_generation` or `generation_batch_size`"),
    ("grpo-vespo-vllm", "grpo", {"loss_type": "vespo", "use_vllm": True}, ("rl_config", "use_vllm"),
     "use_vllm_unsupported", "set `use_vllm: false` or choose another `loss_type`"),
    ("grpo-one-generation", "grpo", {"num_generations": 1}, ("rl_config", "num_generations"), "greater_than_equal",
     "2"),
    ("grpo-top-p-above-one", "grpo", {"top_p": 1.5}, ("rl_config", "top_p"), "less_than_equal", "1"),
    ("grpo-top-k-negative", "grpo", {"top_k": -1}, ("rl_config", "top_k"), "greater_than_equal", "0"),
    ("grpo-temperature-zero", "grpo", {"temperature": 0}, ("rl_config", "temperature"), "greater_than", "0"),
    ("grpo-beta-negative", "grpo", {"beta": -0.1}, ("rl_config", "beta"), "greater_than_equal", "0"),
    ("grpo-epsilon-zero", "grpo", {"epsilon": 0}, ("rl_config", "epsilon"), "greater_than", "0"),
]

ACCEPTED = [
    ("dpo-defaults", "dpo", {}),
    *[(f"dpo-{v}", "dpo", {"loss_type": v, **({"label_smoothing": 1e-3} if v == "exo_pair" else {})})
      for v in DPO_LOSS_TYPES],
    ("dpo-mpo", "dpo", {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}),
    ("dpo-list-without-weights", "dpo", {"loss_type": ["sigmoid", "sft"]}),
    ("dpo-one-weight", "dpo", {"loss_type": "ipo", "loss_weights": [2.0]}),
    ("dpo-exo-smoothed", "dpo", {"loss_type": ["exo_pair", "sft"], "label_smoothing": 0.01}),
    ("dpo-robust", "dpo", {"loss_type": "robust", "label_smoothing": 0.1}),
    ("dpo-weighting-sigmoid", "dpo", {"loss_type": "sigmoid", "use_weighting": True}),
    ("dpo-aot-unweighted", "dpo", {"loss_type": ["aot", "aot_unpaired"]}),
    ("dpo-precompute", "dpo", {"precompute_ref_log_probs": True, "padding_free": True, "max_length": None}),
    ("dpo-keep-end", "dpo", {"truncation_mode": "keep_end"}),
    ("grpo-defaults", "grpo", {}),
    *[(f"grpo-{v}", "grpo", {"loss_type": v}) for v in GRPO_LOSS_TYPES],
    *[(f"grpo-scale-{v}", "grpo", {"scale_rewards": v}) for v in GRPO_SCALE_REWARDS],
    ("grpo-scale-true", "grpo", {"scale_rewards": True}),
    ("grpo-scale-false", "grpo", {"scale_rewards": False}),
    ("grpo-dapo-clip", "grpo", {"epsilon": 0.2, "epsilon_high": 0.28}),
    ("grpo-cispo-cap", "grpo", {"loss_type": "cispo", "epsilon_high": 5.0}),
    ("grpo-epsilon-high-equal", "grpo", {"epsilon": 0.3, "epsilon_high": 0.3}),
    ("grpo-gen-batch", "grpo", {"generation_batch_size": 16}),
    ("grpo-steps-per-gen", "grpo", {"steps_per_generation": 2}),
    ("grpo-vllm-dapo", "grpo", {"use_vllm": True}),
    ("grpo-vespo-no-vllm", "grpo", {"loss_type": "vespo", "use_vllm": False}),
    ("grpo-sampling", "grpo", {"num_generations": 4, "top_k": 50, "top_p": 0.9, "temperature": 0.7, "beta": 0.04,
                               "num_iterations": 2, "mask_truncated_completions": True}),
]

SPECS = {"dpo": dpo_spec, "grpo": grpo_spec}
MODELS = {"dpo": DPOParams, "grpo": GRPOParams}


@pytest.mark.parametrize("algo,rl,loc,typ,phrase", [pytest.param(*r[1:], id=r[0]) for r in REFUSED])
def test_refused_with_field_loc_and_fix(algo, rl, loc, typ, phrase, felix_home):
    with pytest.raises(SpecError) as info:
        validate_spec(SPECS[algo](rl), check_datasets=False)
    found = [e for e in info.value.errors if tuple(e.loc) == loc and e.type == typ]
    assert found, f"expected {loc} {typ} in {[(tuple(e.loc), e.type, e.msg) for e in info.value.errors]}"
    assert phrase in found[0].msg, found[0].msg
    # the model alone reports the same, located at the field (no union-member tags, no model-level loc)
    model = MODELS[algo]
    data = {"reward_type": REWARD, **rl} if algo == "grpo" else rl
    with pytest.raises(ValidationError) as direct:
        model.model_validate(data)
    assert [tuple(e["loc"]) for e in direct.value.errors()] == [loc[1:]]


@pytest.mark.parametrize("algo,rl", [pytest.param(*r[1:], id=r[0]) for r in ACCEPTED])
def test_accepted_and_resolved(algo, rl, felix_home):
    spec = validate_spec(SPECS[algo](rl), check_datasets=False)
    params = spec.rl()
    assert isinstance(params, MODELS[algo])
    for key, value in rl.items():
        if key == "scale_rewards" and isinstance(value, bool):
            value = "group" if value else "none"  # as TRL maps them
        assert getattr(params, key) == value, key
    assert MODELS[algo].model_validate(spec.rl_config) == params  # the resolved rl_config validates again


def test_errors_name_value_expectation_and_fix():
    """The style of every message written here: the field and its value, what is expected, what to set."""
    ours = [r for r in REFUSED if r[4] in ("value_error", "too_short") or r[4].endswith(("_required", "_unsupported"))
            or (r[4] == "literal_error" and r[3][-1] != "truncation_mode")]
    assert len(ours) >= 15
    for _, algo, rl, loc, _, _ in ours:
        data = {"reward_type": REWARD, **rl} if algo == "grpo" else rl
        with pytest.raises(ValidationError) as info:
            MODELS[algo].model_validate(data)
        msg = info.value.errors()[0]["msg"]
        assert msg.startswith(f"`{loc[-1]}") and "expected" in msg and re.search(r"\b(set|remove)\b", msg), msg


def test_validate_does_not_import_trl():
    code = ("import sys; from felix_train.rl_config import DPOParams, GRPOParams; "
            "DPOParams(loss_type='aot_unpaired'); GRPOParams(reward_type='x'); "
            "assert 'trl' not in sys.modules and 'torch' not in sys.modules, 'rl_config imported TRL or torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the accepted values follow the installed TRL --------------------------------------------------------------------

@pytest.fixture(scope="module")
def trl():
    return pytest.importorskip("trl")


def _quoted(text: str) -> set[str]:
    return set(re.findall(r"'(\w+)'", text))


def _help(config_cls, name: str) -> str:
    return {f.name: f for f in dataclasses.fields(config_cls)}[name].metadata["help"]


def _trl_dpo_losses(trl) -> set[str]:
    """The DPO losses TRL names in `DPOConfig.loss_type`'s help, checked against the trainer's own dispatch."""
    help_ = _help(trl.DPOConfig, "loss_type")
    documented = _quoted(help_.split("Possible values are:")[1].split("If multiple")[0])
    source = inspect.getsource(trl.DPOTrainer._compute_loss)
    dispatched = set(re.findall(r'loss_type == "(\w+)"', source))
    assert documented == dispatched, f"TRL documents {sorted(documented)} but dispatches {sorted(dispatched)}"
    return dispatched


def _trl_grpo_losses(trl) -> set[str]:
    documented = _quoted(_help(trl.GRPOConfig, "loss_type").split("Supported values are")[1].split(". ")[0])
    source = inspect.getsource(trl.GRPOTrainer._compute_loss)
    dispatched = set(re.findall(r'loss_type == "(\w+)"', source))
    for group in re.findall(r"loss_type in \[([^\]]*)\]", source):
        dispatched |= set(re.findall(r'"(\w+)"', group))
    assert documented == dispatched, f"TRL documents {sorted(documented)} but dispatches {sorted(dispatched)}"
    return dispatched


def _config(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], **kw)


def test_dpo_loss_types_match_trl(trl, tmp_path):
    theirs = _trl_dpo_losses(trl)
    assert set(DPO_LOSS_TYPES) == theirs, (
        f"missing here: {sorted(theirs - set(DPO_LOSS_TYPES))}; unknown to TRL: {sorted(set(DPO_LOSS_TYPES) - theirs)}")
    for value in DPO_LOSS_TYPES:
        assert _config(trl.DPOConfig, tmp_path, loss_type=[value]).loss_type == [value]
    for old, (new, _) in DPO_RENAMED_LOSS_TYPES.items():
        assert old not in theirs and new in theirs


def test_grpo_loss_types_and_scale_rewards_match_trl(trl, tmp_path):
    theirs = _trl_grpo_losses(trl)
    assert set(GRPO_LOSS_TYPES) == theirs, (
        f"missing here: {sorted(theirs - set(GRPO_LOSS_TYPES))}; unknown to TRL: {sorted(set(GRPO_LOSS_TYPES) - theirs)}")
    for value in GRPO_LOSS_TYPES:
        assert _config(trl.GRPOConfig, tmp_path, loss_type=value, per_device_train_batch_size=8).loss_type == value
    source = inspect.getsource(trl.GRPOTrainer._generate_and_score_completions)
    scale = set(re.findall(r'scale_rewards == "(\w+)"', source))
    for group in re.findall(r"scale_rewards in \[([^\]]*)\]", source):
        scale |= set(re.findall(r'"(\w+)"', group))
    assert set(GRPO_SCALE_REWARDS) == scale, sorted(scale)
    for ours, value in ((v, v) for v in GRPO_SCALE_REWARDS):
        assert _config(trl.GRPOConfig, tmp_path, scale_rewards=value, per_device_train_batch_size=8).scale_rewards == ours
    for value, ours in ((True, "group"), (False, "none")):
        theirs_value = _config(trl.GRPOConfig, tmp_path, scale_rewards=value, per_device_train_batch_size=8).scale_rewards
        assert theirs_value == ours == GRPOParams(reward_type="x", scale_rewards=value).scale_rewards


def test_trl_enforces_the_rules_mirrored_here(trl, tmp_path):
    """What TRL 1.16 refuses on these keys, so a TRL upgrade that changes a rule fails here, next to the rule."""
    with pytest.raises(ValueError, match="loss_weights"):
        _config(trl.DPOConfig, tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="generation_batch_size"):
        _config(trl.GRPOConfig, tmp_path, per_device_train_batch_size=8, generation_batch_size=16, steps_per_generation=2)
    with pytest.raises(ValueError, match="at least 2 generations"):
        _config(trl.GRPOConfig, tmp_path, per_device_train_batch_size=8, num_generations=1)
    # the DPO / GRPO trainers' own checks run on a loaded model; their conditions are read from the source
    dpo = inspect.getsource(trl.DPOTrainer.__init__)
    assert '"exo_pair" in self.loss_types and self.label_smoothing == 0.0' in dpo
    sorting = re.search(r'self\.use_weighting and any\(loss_type in \{([^}]*)\}', dpo)
    assert sorting and set(re.findall(r'"(\w+)"', sorting.group(1))) == DPO_SORTING_LOSS_TYPES
    assert "args.padding_free" in dpo and "self.padding_free = False" in dpo  # TRL 1.16 ignores padding_free
    grpo = inspect.getsource(trl.GRPOTrainer.__init__)
    assert 'self.loss_type == "vespo" and self.use_vllm and self.vllm_importance_sampling_correction' in grpo
    defaults = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    assert defaults["vllm_importance_sampling_correction"] is True
    assert defaults["vllm_importance_sampling_mode"] not in ("token_truncate", "token_mask")


@pytest.mark.parametrize("algo,rl", [pytest.param(*r[1:], id=r[0]) for r in ACCEPTED])
def test_accepted_configs_build_a_trl_config(algo, rl, trl, tmp_path):
    """Every accepted rl_config makes a TRL config as the trainers do (the trainer-only checks are above)."""
    params = MODELS[algo].model_validate({"reward_type": REWARD, **rl} if algo == "grpo" else rl)
    values = params.model_dump(exclude=set(FELIX_KEYS))
    if algo == "dpo":
        values["loss_type"] = values["loss_type"] if isinstance(values["loss_type"], list) else [values["loss_type"]]
        config = _config(trl.DPOConfig, tmp_path, **values)
    else:
        config = _config(trl.GRPOConfig, tmp_path, per_device_train_batch_size=8, **values)
    for key, value in values.items():
        assert getattr(config, key) == value or key in ("generation_batch_size", "steps_per_generation"), key
