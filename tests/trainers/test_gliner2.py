"""The GLiNER2 trainer end to end on the tiny model: train, checkpoint, stop, preempt, resume, continue, export.

Every job runs through `run_job` (or `python -m felix_train` for the SIGTERM test) on a
small generated entity dataset, with the session's shared `$FELIX_HOME` so the tiny
model is built once. Jobs get unique ids.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gliner2")

from felix_train.checkpoints import list_checkpoints, verify_checkpoint  # noqa: E402
from felix_train.jobs import JobFolder  # noqa: E402
from felix_train.runner import ExitCode, run_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["person", "company", "location"]

PEOPLE = ["John Smith", "Mary Jones", "David Brown", "Sarah Miller", "James Wilson", "Emma Davis", "Peter Clark"]
COMPANIES = ["Google", "Apple", "Microsoft", "Amazon", "Tesla", "Samsung", "Intel"]
CITIES = ["London", "Paris", "Berlin", "Tokyo", "Madrid", "Rome", "Boston"]
TEMPLATES = [
    "{p} works at {c} in {l} .",
    "{p} joined {c} last year .",
    "{c} opened a new office in {l} .",
    "{p} visited {l} with friends .",
    "the weather was good today .",
    "we went home early after the game .",
]


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Entity records that list only the types they contain (negatives list one empty type)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.choice(TEMPLATES)
        p, c, loc = rng.choice(PEOPLE), rng.choice(COMPANIES), rng.choice(CITIES)
        ents = {}
        if "{p}" in t:
            ents["person"] = [p]
        if "{c}" in t:
            ents["company"] = [c]
        if "{l}" in t:
            ents["location"] = [loc]
        out.append({"input": t.format(p=p, c=c, l=loc), "output": {"entities": ents or {"person": []}}})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def store(model_store, tmp_path_factory):
    """The shared $FELIX_HOME with this module's datasets registered."""
    from felix_train.data.registry import DatasetRegistry

    src = tmp_path_factory.mktemp("g2-data")
    reg = DatasetRegistry(model_store)
    assert reg.add("g2-toy", write_jsonl(src / "toy.jsonl", make_records(48)), overwrite=True).state.value == "ready"
    long_text = " ".join(["word"] * 20) + " John Smith ."
    long = make_records(8) + [{"input": long_text, "output": {"entities": {"person": ["John Smith"]}}}]
    assert reg.add("g2-long", write_jsonl(src / "long.jsonl", long), overwrite=True).state.value == "ready"
    return model_store


@pytest.fixture
def home(store, monkeypatch):
    monkeypatch.setenv("FELIX_HOME", str(store))
    torch.set_num_threads(1)
    return store


def spec(**over) -> dict:
    base = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "g2-toy"}], "training_type": "full",
            "learning_rate": 5e-3, "num_epochs": 3,
            "engine": {"batch_size": 8, "logging_steps": 1, "report_to": [], "eval": {"fraction": 0.2}}}
    engine = over.pop("engine", {})
    base.update(over)
    base["engine"].update(engine)
    return base


def losses(job: JobFolder) -> list[float]:
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def logged_steps(job: JobFolder) -> int:
    return len(job.metrics_path.read_text().splitlines()) if job.metrics_path.exists() else 0


# -- one full and one LoRA job, shared by the tests that read them -------------------------------

@pytest.fixture(scope="module")
def full_job(store):
    """A complete full-training job, with every status written to status.json recorded."""
    from unittest import mock

    torch.set_num_threads(1)
    written: list[str] = []
    polled: set[str] = set()
    original = JobFolder.write_status

    def record(self, status):
        written.append(status.get("status"))
        original(self, status)

    job = JobFolder("g2-full", store)
    done = threading.Event()

    def poll():  # a reader beside the run, as the API would be; it reads once more after the run returns
        while True:
            finished = done.is_set()
            try:
                polled.add(json.loads(job.status_path.read_text())["status"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            if finished:
                return
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        with mock.patch.object(JobFolder, "write_status", record):
            code = run_job(spec(), job_id=job.id, home=store)
    finally:
        done.set()
        poller.join()
    return job, code, written, polled


@pytest.fixture(scope="module")
def lora_job(store):
    torch.set_num_threads(1)
    job = JobFolder("g2-lora", store)
    code = run_job(spec(training_type="lora", num_epochs=2, engine={"lora": {"r": 4, "dropout": 0.1}}),
                   job_id=job.id, home=store)
    return job, code


# -- tests -------------------------------------------------------------------------------------------------------

def test_full_run_statuses_loss_and_metrics(full_job):
    job, code, written, polled = full_job
    assert code == ExitCode.COMPLETE
    sequence = [s for i, s in enumerate(written) if i == 0 or s != written[i - 1]]
    assert sequence == ["requested", "running", "complete"]
    assert "running" in polled and "complete" in polled

    loss = losses(job)
    assert len(loss) == 15  # 38 train records / batch 8 = 5 steps per epoch, 3 epochs, logged every step
    assert sum(loss[-3:]) / 3 < 0.5 * sum(loss[:3]) / 3, f"loss did not fall: {loss}"

    status = job.read_status()
    metrics = status["metrics"]
    for key in ("train_loss", "eval_loss", "eval_precision", "eval_recall", "eval_f1", "train_runtime_s",
                "train_samples_per_second", "num_train_records", "num_eval_records", "best_checkpoint"):
        assert key in metrics, key
    assert {f"eval_f1/{label}" for label in LABELS} <= set(metrics)
    assert (metrics["num_train_records"], metrics["num_eval_records"]) == (38, 10)
    assert status["progress"]["step"] == status["progress"]["total_steps"] == 15

    log = job.log_path.read_text()
    assert "step 1/15" in log and "eval step 5:" in log and "job complete" in log
    # every metrics.jsonl row has the logging keys; eval rows carry the eval_ prefix
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    assert all({"loss", "learning_rate", "grad_norm"} <= set(r) for r in rows if "loss" in r)
    assert sum(1 for r in rows if "eval_f1" in r) == 3


def test_the_encoder_trains_at_the_resolved_encoder_learning_rate(full_job):
    from felix_train import catalog

    job, *_ = full_job
    ratio = catalog.get_entry("felix/tiny-gliner2").encoder_lr_ratio[catalog.TrainingType.FULL]
    assert job.read_status()["hyperparameters"]["encoder_learning_rate"] == pytest.approx(5e-3 * ratio)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and r["learning_rate"] > 0]
    assert steps and all(r["encoder_learning_rate"] == pytest.approx(r["learning_rate"] * ratio) for r in steps)


def test_checkpoint_manifests_have_uuids_and_hashes(full_job):
    job, *_ = full_job
    manifests = list_checkpoints(job)
    steps = [m.step for m in manifests]  # one per epoch; retention keeps the last 2 and the best by eval_f1
    assert steps in ([10, 15], [5, 10, 15])
    best = max(manifests, key=lambda m: m.metrics["eval_f1"])
    assert steps[0] == 10 or best.step == 5
    for m in manifests:
        uuid.UUID(m.uuid)
        folder = job.checkpoints_dir / m.uuid
        names = {f.path for f in m.files}
        assert {"model/model.safetensors", "training_state.pt", "trainer_state.json"} <= names
        assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) for f in m.files)
        assert verify_checkpoint(folder) == []
        assert m.base_model == "felix/tiny-gliner2" and m.training_type == "full"
        assert "eval_f1" in m.metrics and "train_loss" in m.metrics
    metrics = job.read_status()["metrics"]
    assert metrics["last_checkpoint"] == manifests[-1].uuid


def test_final_model_loads_without_felix_and_extracts(full_job):
    from gliner2 import GLiNER2

    job, *_ = full_job
    info = json.loads((job.model_dir / "felix_model.json").read_text())
    assert info["training_type"] == "full" and info["files"]["model"]["format"] == "gliner2"
    model = GLiNER2.from_pretrained(str(job.model_dir))
    text = "Mary Jones works at Google in Paris ."
    out = model.extract_entities(text, LABELS)
    assert set(out["entities"]) == set(LABELS)
    # the count head was trained on entities: at threshold 0 every label yields spans (a count of 0 yields none)
    anything = model.extract_entities(text, LABELS, threshold=0.0)["entities"]
    assert all(anything[label] for label in LABELS), anything


def test_datasets_folder_is_never_written(full_job, store):
    job, *_ = full_job
    assert sorted(p.name for p in (store / "datasets" / "g2-toy").iterdir()) == ["data.jsonl", "manifest.json"]
    prepared = [json.loads(line) for line in (job.work_dir / "gliner2" / "train.jsonl").read_text().splitlines()]
    assert all(set(r["output"]["entities"]) == set(LABELS) for r in prepared)  # every label listed


def test_lora_exports_adapter_and_merged_model(lora_job):
    from gliner2 import GLiNER2
    from peft import PeftModel
    from safetensors.torch import load_file

    job, code = lora_job
    assert code == ExitCode.COMPLETE
    for m in list_checkpoints(job):
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= {f.path for f in m.files}
    info = json.loads((job.model_dir / "felix_model.json").read_text())
    assert set(info["files"]) == {"adapter", "merged"}
    merged = GLiNER2.from_pretrained(str(job.model_dir / "merged"))
    base = GLiNER2.from_pretrained(info["base_model_path"])
    # the catalog's LoRA targets are the encoder: the task heads train in full and travel in the adapter
    adapter_cfg = json.loads((job.model_dir / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["modules_to_save"]) == ["classifier", "count_embed", "count_pred", "span_rep"]
    assert all(".encoder." in f".{m}" for m in adapter_cfg["target_modules"])
    adapter_state = load_file(str(job.model_dir / "adapter" / "adapter_model.safetensors"))
    head_key = "base_model.model.span_rep.span_rep_layer.project_start.0.weight"
    saved_head = adapter_state[head_key]  # the whole head, not a low-rank delta
    base_head = base.state_dict()["span_rep.span_rep_layer.project_start.0.weight"]
    merged_head = merged.state_dict()["span_rep.span_rep_layer.project_start.0.weight"]
    assert (saved_head - base_head).abs().max() > 1e-4, "the head did not train"
    assert torch.equal(merged_head, saved_head), head_key
    adapted = PeftModel.from_pretrained(base, str(job.model_dir / "adapter")).get_base_model()
    text = ["John Smith visited Tokyo with friends ."]
    a = merged.batch_extract_entities(text, LABELS, threshold=0.0, include_confidence=True)
    b = adapted.batch_extract_entities(text, LABELS, threshold=0.0, include_confidence=True)
    for label in LABELS:
        got_a, got_b = a[0]["entities"][label], b[0]["entities"][label]
        assert [x["text"] for x in got_a] == [x["text"] for x in got_b]
        assert [x["confidence"] for x in got_a] == pytest.approx([x["confidence"] for x in got_b], abs=1e-5)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_continue_from_checkpoint_uuid_starts_at_its_weights(kind, full_job, lora_job, home):
    from safetensors.torch import load_file

    job = full_job[0] if kind == "full" else lora_job[0]
    source = list_checkpoints(job)[0]
    folder = job.checkpoints_dir / source.uuid
    new = JobFolder(f"g2-continue-{kind}", home)
    # a learning rate of 1e-9 for one step: the weights stay where they started, to 1e-6
    code = run_job(spec(base_model=source.uuid, training_type=kind, learning_rate=1e-9,
                        engine={"max_steps": 1, "lora": {"r": 4}}), job_id=new.id, home=home)
    assert code == ExitCode.COMPLETE
    assert f"weights from checkpoint {source.uuid}" in new.log_path.read_text()
    if kind == "full":
        start, end = weights(folder / "model"), weights(new.model_dir)
        assert max_diff(start, weights(home / "models" / "felix--tiny-gliner2")) > 1e-3  # not the base
    else:
        start = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
        end = load_file(str(new.model_dir / "adapter" / "adapter_model.safetensors"))
    assert max_diff(start, end) <= 1e-6
    assert json.loads(new.spec_path.read_text())["base_model"] == source.uuid


def test_stop_request_checkpoints_and_cancels(home):
    job = JobFolder("g2-stop", home)

    def stopper():
        wait_for(lambda: logged_steps(job) >= 3, what="3 logged steps")
        job.request_stop()

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    code = run_job(spec(num_epochs=6), job_id=job.id, home=home)
    thread.join()
    assert code == ExitCode.CANCELLED
    status = job.read_status()
    assert status["status"] == "cancelled" and status["metrics"] is None
    last = list_checkpoints(job)[-1]
    assert last.step == losses(job).__len__() and 3 <= last.step < 30
    assert not job.stop_path.exists() and not job.model_dir.exists()
    assert f"stop requested at step {last.step}" in job.log_path.read_text()


@pytest.mark.parametrize("kind", ["full", "lora", "full-sampled"])
def test_sigterm_preempts_and_rerun_resumes_to_the_same_weights(kind, home, tmp_path):
    spec_path = tmp_path / "spec.json"
    # sampled: each epoch draws a sample of the entity-free records and its mention replacements anew
    share = {"entity_free_share": 0.2, "mention_replacement": 0.5} if kind.endswith("sampled") else {}
    kind = kind.split("-")[0]
    spec_path.write_text(json.dumps(spec(num_epochs=4, training_type=kind, engine={"save_steps": 7, **share})))
    job = JobFolder(f"g2-sigterm-{kind}{'-sampled' if share else ''}", home)
    env = {**os.environ, "FELIX_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "felix_train", str(spec_path), "--job-id", job.id]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: logged_steps(job) >= 3 or proc.poll() is not None, what="3 logged steps")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.PREEMPTED, err[-3000:]
    assert job.read_status()["status"] == "requested"
    preempted_at = list_checkpoints(job)[-1].step
    assert 3 <= preempted_at < 20

    rerun = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert rerun.returncode == ExitCode.COMPLETE, rerun.stderr[-3000:]
    log = job.log_path.read_text()
    assert f"resumed at step {preempted_at}" in log

    reference = JobFolder(f"{job.id}-ref", home)
    assert run_job(json.loads(spec_path.read_text()), job_id=reference.id, home=home) == ExitCode.COMPLETE
    if kind == "full":
        assert max_diff(weights(job.model_dir), weights(reference.model_dir)) <= 1e-6
    else:  # the adapter (LoRA + full heads) and the merged model
        from safetensors.torch import load_file

        adapter = "adapter/adapter_model.safetensors"
        assert max_diff(load_file(str(job.model_dir / adapter)), load_file(str(reference.model_dir / adapter))) <= 1e-6
        assert max_diff(weights(job.model_dir / "merged"), weights(reference.model_dir / "merged")) <= 1e-6
    a, b = job.read_status()["metrics"], reference.read_status()["metrics"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    assert a["eval_f1"] == pytest.approx(b["eval_f1"], abs=1e-9)


def test_failing_dataset_marks_the_job_failed(home):
    job = JobFolder("g2-fail", home)
    code = run_job(spec(datasets=[{"name": "g2-long"}], engine={"max_length": 8}), job_id=job.id, home=home)
    assert code == ExitCode.DATASET_INVALID
    status = job.read_status()
    assert status["status"] == "failed"
    assert "longer than engine.max_length=8" in status["error"]["message"]
    assert "g2-long line 9: 23 words" in status["error"]["message"]
    assert "longer than engine.max_length=8" in job.log_path.read_text()


# -- units -------------------------------------------------------------------------------------------------------

def test_entity_count_loss_trains_the_count_head(home):
    from gliner2.training.trainer import ExtractorCollator

    from felix_train.models import resolve_model
    from felix_train.catalog import get_entry
    from felix_train.trainers.gliner2 import add_entity_count_loss, load_gliner2

    model = load_gliner2(resolve_model(get_entry("felix/tiny-gliner2"), home))
    batch = ExtractorCollator(model.processor, is_training=True)(
        [(r["input"], r["output"]) for r in make_records(4, seed=1)])
    model.train()
    assert float(model(batch)["count_loss"]) == 0.0  # gliner2 2.1.0 skips the count loss for entities
    add_entity_count_loss(model)
    out = model(batch)
    assert out["count_loss"].item() > 0.0
    out["total_loss"].backward()
    assert model.count_pred[0].weight.grad.abs().sum() > 0


def test_fill_entity_labels_lists_every_label_without_mutating():
    from felix_train.trainers.gliner2 import entity_labels, fill_entity_labels

    records = [{"input": "Ada lives in Paris", "output": {"entities": {"person": ["Ada"], "location": ["Paris"]}}},
               {"input": "nothing here", "output": {"entities": {}}},
               {"input": "good", "output": {"classifications": [{"task": "s", "labels": ["a", "b"], "true_label": "a"}]}}]
    labels = entity_labels(records)
    filled = fill_entity_labels(records, labels)
    assert labels == ["person", "location"]
    assert filled[1]["output"]["entities"] == {"person": [], "location": []}
    assert records[1]["output"]["entities"] == {}  # the caller's records are untouched
    assert "entities" not in filled[2]["output"]


def test_lora_plan_trains_untargeted_heads_in_full(home):
    from felix_train.catalog import get_entry
    from felix_train.models import resolve_model
    from felix_train.trainers.gliner2 import GLINER2_DEFAULT_TARGETS, lora_plan, load_gliner2

    model = load_gliner2(resolve_model(get_entry("felix/tiny-gliner2"), home))
    adapted, full = lora_plan(model, ["encoder"])
    assert adapted and all(name.startswith("encoder.") for name in adapted)
    assert full == ["span_rep", "classifier", "count_embed", "count_pred"]
    adapted, full = lora_plan(model, list(GLINER2_DEFAULT_TARGETS))  # gliner2's default: LoRA on the heads too
    assert full == [] and any(name.startswith("span_rep.") for name in adapted)
    adapted, full = lora_plan(model, ["encoder", "count_pred"])
    assert full == ["span_rep", "classifier", "count_embed"]


def test_built_heads_are_he_initialised(home):
    from felix_train.catalog import get_entry
    from felix_train.models import resolve_model
    from felix_train.trainers.gliner2 import load_gliner2

    model = load_gliner2(resolve_model(get_entry("felix/tiny-gliner2"), home))
    layer = model.span_rep.span_rep_layer.project_start[0]
    fan_in = layer.weight.shape[1]
    with torch.no_grad():
        assert float(layer.weight.std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
        assert float(layer.bias.abs().max()) == 0.0


def test_label_sampling_shuffles_types_and_drops_blind_synthetic_labels():
    from types import SimpleNamespace

    from felix_train.trainers.gliner2 import set_label_sampling

    def model():
        return SimpleNamespace(processor=SimpleNamespace(sampling_config=SimpleNamespace(
            shuffle_entities=False, synthetic_entity_label_prob=0.2)))

    plain = [{"input": "Ada", "output": {"entities": {"person": ["Ada"]}}}]
    described = plain + [{"input": "Bo", "output": {"entities": {"person": ["Bo"]},
                                                    "entity_descriptions": {"person": "a human"}}}]
    m = model()
    assert len(set_label_sampling(m, plain)) == 2
    assert m.processor.sampling_config.shuffle_entities and m.processor.sampling_config.synthetic_entity_label_prob == 0
    m = model()
    assert len(set_label_sampling(m, described)) == 1
    assert m.processor.sampling_config.shuffle_entities and m.processor.sampling_config.synthetic_entity_label_prob == 0.2


def test_epoch_order_is_length_grouped_shuffled_and_deterministic():
    from types import SimpleNamespace

    from felix_train.trainers.gliner2 import FelixGLiNER2Trainer

    rng = __import__("random").Random(0)
    texts = [" ".join(["w"] * rng.randint(1, 60)) for _ in range(803)]

    def trainer():
        return SimpleNamespace(_order_override={}, _lengths=None, global_batch_size=8, entity_free=[],
                               config=SimpleNamespace(seed=42), train_dataset=[(t, {}) for t in texts],
                               ctx=SimpleNamespace(spec=SimpleNamespace(engine=SimpleNamespace(entity_free_share=1.0))))

    order = FelixGLiNER2Trainer.epoch_order(trainer(), 0)
    assert sorted(order) == list(range(len(texts)))  # every record once
    assert order == FelixGLiNER2Trainer.epoch_order(trainer(), 0)  # a function of (seed, epoch)
    assert order != FelixGLiNER2Trainer.epoch_order(trainer(), 1)
    lengths = [len(texts[i].split()) for i in order]
    batches = [lengths[i:i + 8] for i in range(0, len(lengths), 8)]
    spread = sum(max(b) - min(b) for b in batches) / len(batches)
    assert spread < 10  # similar lengths in a batch (a plain shuffle: ~45 words apart)
    # batches in random order: transformers' order alone runs each mega-batch (here 25 batches) longest first
    firsts = [max(b) for b in batches[:25]]
    assert firsts != sorted(firsts, reverse=True)
    assert len(batches[-1]) == len(texts) % 8  # the short batch stays last
    resumed = trainer()
    resumed._order_override = {3: order}
    assert FelixGLiNER2Trainer.epoch_order(resumed, 3) == order  # a resumed epoch keeps its recorded order


def test_the_trainer_feeds_mention_replaced_records_drawn_per_seed_epoch_and_record():
    from types import SimpleNamespace

    from felix_train.trainers.gliner2 import FelixGLiNER2Trainer

    records = make_records(40, seed=5)

    def trainer(p):
        return SimpleNamespace(ctx=SimpleNamespace(spec=SimpleNamespace(engine=SimpleNamespace(mention_replacement=p))),
                               config=SimpleNamespace(seed=42), data=SimpleNamespace(train=records),
                               train_dataset=[(r["input"], r["output"]) for r in records], _mention_pool=None)

    item = FelixGLiNER2Trainer.train_item
    plain = [item(trainer(0.0), i, 0) for i in range(40)]
    assert plain == [(r["input"], r["output"]) for r in records]
    swapped = [item(trainer(1.0), i, 0) for i in range(40)]
    assert sum(a != b for a, b in zip(plain, swapped)) > 20  # every record with a mention
    assert swapped == [item(trainer(1.0), i, 0) for i in range(40)]  # a resumed epoch draws the same
    assert swapped != [item(trainer(1.0), i, 1) for i in range(40)]  # the next epoch draws anew


def test_entity_free_share_caps_the_entity_free_records_of_an_epoch_with_a_new_sample_each_epoch():
    from felix_train.trainers.gliner2.data import entity_free, entity_free_kept, epoch_order, epoch_size

    records = make_records(300, seed=3)
    filled = [{**r, "output": {"entities": {**dict.fromkeys(LABELS, []), **r["output"]["entities"]}}} for r in records]
    free = [i for i, r in enumerate(filled) if entity_free(r)]
    assert 60 < len(free) < 150  # two of the six templates name no entity
    assert not entity_free({"input": "x", "output": {"entities": {"person": []}, "classifications": [{"task": "t"}]}})
    lengths = [len(r["input"].split()) for r in filled]
    with_entities = len(filled) - len(free)
    kept = entity_free_kept(len(filled), len(free), 0.2)
    assert kept == round(with_entities / 4) and epoch_size(len(filled), len(free), 0.2) == with_entities + kept
    orders = [epoch_order(lengths, 8, seed=7, epoch=e, entity_free=free, entity_free_share=0.2) for e in range(3)]
    for order in orders:
        assert len(order) == len(set(order)) == with_entities + kept
        assert set(range(len(filled))) - set(free) <= set(order)  # every record with an entity, every epoch
        assert len(set(order) & set(free)) / len(order) == pytest.approx(0.2, abs=0.01)  # the most they may be
    samples = [frozenset(order) & frozenset(free) for order in orders]
    assert len(set(samples)) == 3  # a new sample of the entity-free records each epoch
    assert orders[0] == epoch_order(lengths, 8, seed=7, epoch=0, entity_free=free, entity_free_share=0.2)
    # data within the share (here about a third are entity-free) and share 1 keep the plain order, draw for draw
    plain = epoch_order(lengths, 8, seed=7, epoch=0)
    assert entity_free_kept(len(filled), len(free), 0.5) == len(free)
    assert epoch_order(lengths, 8, seed=7, epoch=0, entity_free=free, entity_free_share=0.5) == plain
    assert epoch_order(lengths, 8, seed=7, epoch=0, entity_free=free, entity_free_share=1.0) == plain
    assert entity_free_kept(10, 10, 0.2) == 10  # nothing but entity-free records: nothing to balance against


def test_entity_free_share_shortens_the_epochs_in_the_job_and_its_estimate(home):
    from felix_train.estimate.counting import count
    from felix_train.spec import validate_spec

    body = spec(num_epochs=2, engine={"entity_free_share": 0.2})
    estimate = count(validate_spec(body), home=home)
    job = JobFolder("g2-entity-free-fifth", home)
    assert run_job(body, job_id=job.id, home=home) == ExitCode.COMPLETE
    log = job.log_path.read_text()
    found = re.search(r"(\d+) train / \d+ eval records \((\d+) per epoch: (\d+) of the (\d+) entity-free, "
                      r"engine.entity_free_share 0.2\)", log)
    train, per_epoch, kept, free = map(int, found.groups())
    assert per_epoch == train - free + kept and kept < free
    assert list_checkpoints(job)[-1].step == 2 * -(-per_epoch // 8) == estimate.total_steps
    assert estimate.trained_records == 2 * per_epoch and not estimate.exact


def test_read_records_names_the_bad_line(tmp_path):
    from felix_train.errors import DatasetError
    from felix_train.trainers.context import ResolvedDataset
    from felix_train.trainers.gliner2.data import read_records

    def dataset(text: str | None) -> ResolvedDataset:
        path = tmp_path / f"d{uuid.uuid4().hex[:6]}.jsonl"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        return ResolvedDataset(name="ner", path=path, format="ner", num_records=0)

    good = json.dumps({"input": "Ada", "output": {"entities": {"person": ["Ada"]}}})
    assert read_records(dataset("\ufeff" + good + "\n\n" + good + "\n")) == [(1, json.loads(good)), (3, json.loads(good))]
    with pytest.raises(DatasetError, match=r"dataset 'ner' line 2: invalid JSON at column \d+: .*; fix the line"):
        read_records(dataset(good + "\n{oops\n"))
    with pytest.raises(DatasetError, match=r"dataset 'ner' line 1: expected a gliner2 record .*got keys \['text'\]"):
        read_records(dataset('{"text": "Ada"}\n'))
    with pytest.raises(DatasetError, match="holds no records"):
        read_records(dataset("\n"))
    with pytest.raises(DatasetError, match="dataset 'ner': cannot read"):
        read_records(dataset(None))


def test_package_import_loads_no_torch():
    code = ("import sys, felix_train.trainers.gliner2 as g2, felix_train.trainers.gliner2.data, "
            "felix_train.trainers.gliner2.eval; assert 'run' in g2.__all__; print(sorted("
            "m for m in ('torch', 'gliner2', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "[]"
