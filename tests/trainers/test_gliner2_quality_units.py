"""Issue 17, the pure parts: the unseen-mention eval split, label verbalisation, threshold choice, seen/unseen F1.

No model, no torch: these functions decide what the GLiNER2 trainer holds out, asks and saves.
"""

from __future__ import annotations

import random

import pytest

from felix_train.errors import SpecError
from felix_train.spec import EvalSplit, JobSpec
from felix_train.trainers.gliner2.calibrate import GRID, LABEL_MIN_SUPPORT, choose_thresholds
from felix_train.trainers.gliner2.eval import seen_unseen_metrics
from felix_train.trainers.gliner2.labels import asked_labels, label_prompts, prompt_records, verbalize_label
from felix_train.trainers.gliner2.split import (
    MIN_UNSEEN_EVAL,
    record_mentions,
    split_eval,
    split_random,
    train_mentions,
)


def rec(text: str, **ents) -> dict:
    return {"input": text, "output": {"entities": {k.replace("_", "-"): v for k, v in ents.items()}}}


def dataset(n_unique: int, n_hub: int, n_free: int, prefix: str = "", seed: int = 0) -> list[dict]:
    """Records with unique names, records sharing one city (one big mention group), and entity-free ones."""
    out = [rec(f"{prefix}Name{i} was here .", person=[f"{prefix}Name{i}"]) for i in range(n_unique)]
    out += [rec(f"{prefix}Hub{i} lives in Paris .", person=[f"{prefix}Hub{i}"], location=["Paris"]) for i in range(n_hub)]
    out += [rec("nothing to see .", person=[]) for _ in range(n_free)]
    random.Random(seed).shuffle(out)
    return out


def mentions(records: list[dict]) -> set[str]:
    return set(train_mentions(records))


# -- the split ------------------------------------------------------------------------------------------------

def test_unseen_split_holds_out_whole_mention_groups_and_free_records_in_proportion():
    data = {"a": dataset(300, 100, 100)}
    split = split_eval(data, 0.1, 7, EvalSplit.UNSEEN_MENTION)
    assert split.kind == EvalSplit.UNSEEN_MENTION
    train, held = split.parts["a"]
    assert len(train) + len(held) == 500
    assert mentions(held) and not mentions(held) & mentions(train)  # no eval mention occurs in training
    with_ents = [r for r in held if record_mentions(r)]
    assert len(with_ents) == 40 and MIN_UNSEEN_EVAL <= 40  # round(400 × 0.1)
    assert not any("Paris" in r["input"] for r in held)  # the 100-record Paris group is too big to hold out
    assert len(held) - len(with_ents) == 10  # entity-free records in the entity records' proportion
    again = split_eval(data, 0.1, 7, EvalSplit.UNSEEN_MENTION).parts["a"]
    assert again == (train, held)
    assert split_eval(data, 0.1, 8, EvalSplit.UNSEEN_MENTION).parts["a"][1] != held


def test_unseen_split_keeps_each_dataset_apart_and_a_shared_mention_out_of_eval():
    a, b = dataset(200, 0, 20, "A"), dataset(200, 0, 20, "B")
    shared = rec("Shared One met Shared Two .", person=["Shared One"])
    a.append(shared)
    b.append(rec("Shared One again .", person=["Shared One", "Bob Extra"]))
    split = split_eval({"a": a, "b": b}, 0.1, 1, EvalSplit.UNSEEN_MENTION)
    assert split.kind == EvalSplit.UNSEEN_MENTION
    train = split.parts["a"][0] + split.parts["b"][0]
    held = split.parts["a"][1] + split.parts["b"][1]
    assert not mentions(held) & mentions(train)
    assert 15 <= sum(1 for r in split.parts["a"][1] if record_mentions(r)) <= 20
    assert 15 <= sum(1 for r in split.parts["b"][1] if record_mentions(r)) <= 20


def test_too_connected_or_small_data_falls_back_to_the_random_split():
    connected = {"a": dataset(0, 400, 50)}  # one mention group
    split = split_eval(connected, 0.1, 3, EvalSplit.UNSEEN_MENTION)
    assert split.kind == EvalSplit.RANDOM and "seen and unseen" in split.note
    assert split.parts["a"] == split_random(connected["a"], 0.1, 3)
    small = {"a": dataset(100, 0, 10)}  # 10 eval records with entities at most
    assert split_eval(small, 0.1, 3, EvalSplit.UNSEEN_MENTION).kind == EvalSplit.RANDOM
    asked = split_eval({"a": dataset(300, 0, 0)}, 0.1, 3, EvalSplit.RANDOM)
    assert asked.kind == EvalSplit.RANDOM and asked.note == "random split"
    assert split_eval({"a": dataset(300, 0, 0)}, 0, 3, EvalSplit.UNSEEN_MENTION).parts["a"][1] == []


def test_eval_split_is_an_engine_option_defaulting_to_unseen_mention():
    spec = JobSpec(base_model="felix/tiny-gliner2", datasets=[{"name": "x"}])
    assert spec.engine.eval.split == EvalSplit.UNSEEN_MENTION
    assert spec.engine.early_stopping_patience is None and spec.engine.label_verbalize is True
    assert JobSpec(base_model="x", datasets=[{"name": "x"}], engine={"eval": {"split": "random"}}).engine.eval.split \
        == EvalSplit.RANDOM
    with pytest.raises(Exception):
        JobSpec(base_model="x", datasets=[{"name": "x"}], engine={"eval": {"split": "by-date"}})


def test_a_bad_eval_split_is_a_located_spec_error():
    from felix_train.spec import validate_spec

    with pytest.raises(SpecError) as err:
        validate_spec({"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}],
                       "engine": {"eval": {"split": "by-date"}, "early_stopping_patience": 0}}, check_datasets=False)
    locs = {tuple(e.loc) for e in err.value.errors}
    assert ("engine", "eval", "split") in locs and ("engine", "early_stopping_patience") in locs


# -- labels ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, words", [
    ("creative-work", "creative work"), ("B-PER", "person"), ("I-ORG", "organization"), ("WORK_OF_ART", "work of art"),
    ("product_name", "product name"), ("creativeWork", "creative work"), ("GPE", "geopolitical entity"),
    ("LOC", "location"), ("person", "person"), ("iPhone", "iPhone"), ("Person", "Person"),
])
def test_verbalize_label(label, words):
    assert verbalize_label(label) == words


def test_label_prompts_keep_colliding_names_and_can_be_turned_off():
    assert label_prompts(["creative-work", "person"]) == {"creative-work": "creative work", "person": "person"}
    assert label_prompts(["PER", "person"]) == {"PER": "PER", "person": "person"}  # both would be `person`
    assert label_prompts(["creative-work", "creative work"]) == {"creative-work": "creative-work",
                                                                 "creative work": "creative work"}
    assert label_prompts(["creative-work"], verbalize=False) == {"creative-work": "creative-work"}


def test_prompt_records_rename_labels_and_add_descriptions_without_mutating():
    records = [rec("Dune is good .", creative_work=["Dune"], person=[]), {"input": "x", "output": {"classifications": []}}]
    out = prompt_records(records, {"creative-work": "creative work", "person": "person"}, {"person": "a human"})
    assert out[0]["output"] == {"entities": {"creative work": ["Dune"], "person": []},
                                "entity_descriptions": {"person": "a human"}}
    assert records[0]["output"] == {"entities": {"creative-work": ["Dune"], "person": []}}
    assert out[1] is records[1]


def test_asked_labels_follow_the_saved_model():
    info = {"label_prompts": {"creative-work": "creative work", "person": "person"}, "label_verbalize": True}
    assert asked_labels(["creative-work", "person", "B-LOC"], info) == {
        "creative-work": "creative work", "person": "person", "B-LOC": "location"}
    assert asked_labels(["creative-work"], {}) == {"creative-work": "creative-work"}  # not a felix model
    assert asked_labels(["PER", "person"], {"label_verbalize": True}) == {"PER": "PER", "person": "person"}


# -- thresholds -----------------------------------------------------------------------------------------------

def test_calibration_picks_the_best_global_threshold_and_per_label_ones_only_by_the_rule():
    n = LABEL_MIN_SUPPORT
    gold, scored = [], []
    for i in range(n):
        # person: true mentions score 0.3, a false one 0.2; place: true 0.8, false 0.6; tiny: 3 gold mentions
        gold.append({"person": [f"p{i}"], "place": [f"c{i}"], "tiny": [f"t{i}"] if i < 3 else []})
        scored.append({"person": [(f"p{i}", 0.3), (f"x{i}", 0.2)], "place": [(f"c{i}", 0.8), (f"y{i}", 0.6)],
                       "tiny": [(f"t{i}", 0.3)] if i < 3 else [(f"z{i}", 0.2)]})
    cal = choose_thresholds(gold, scored)
    assert cal.default in GRID and cal.f1_global >= cal.f1_at_half
    assert cal.f1_calibrated >= cal.f1_global
    assert cal.default == 0.3  # person and tiny are right from 0.3 down to 0.25: the tie goes nearest 0.5
    assert cal.per_label == {"place": 0.65}  # place gains from its own; tiny lacks support; person is at its best
    assert cal.f1_calibrated == 1.0
    assert cal.thresholds() == {"default": 0.3, "place": 0.65}
    assert choose_thresholds([{"a": []}], [{"a": [("x", 0.9)]}]) is None  # no gold mention


def test_calibrated_f1_is_never_below_f1_at_half():
    rng = random.Random(0)
    for trial in range(20):
        gold, scored = [], []
        for i in range(30):
            g = {lab: [f"{lab}{i}"] if rng.random() < 0.6 else [] for lab in "abc"}
            gold.append(g)
            scored.append({lab: [(m, rng.random()) for m in g[lab]] + [(f"n{lab}{i}", rng.random())] for lab in "abc"})
        cal = choose_thresholds(gold, scored)
        assert cal.f1_calibrated >= cal.f1_global >= cal.f1_at_half


def test_seen_and_unseen_f1_are_reported_apart_only_when_both_exist():
    seen = frozenset({"paris"})
    gold = [{"loc": ["Paris", "Lyon"]}, {"loc": ["Nice"]}]
    pred = [{"loc": ["paris", "Lyon"]}, {"loc": ["Paris"]}]
    out = seen_unseen_metrics(gold, pred, ["loc"], seen)
    assert out["eval_support_seen"] == 1 and out["eval_support_unseen"] == 2
    assert out["eval_f1_seen"] == 0.0  # `paris` ≠ `Paris` (case-sensitive match); both are seen forms
    assert out["eval_recall_unseen"] == 0.5 and out["eval_precision_unseen"] == 1.0
    assert seen_unseen_metrics([{"loc": ["Lyon"]}], [{"loc": []}], ["loc"], seen) == {}
