"""Distributed runs on CPU: 2 processes over gloo, launched the way a GPU job is (`accelerate launch`, DDP).

`python -m felix_train SPEC` with `engine.distributed.num_processes: 2` launches itself with
`accelerate launch --config_file configs/accelerate/ddp.yaml` (`launch.launch_distributed`); accelerate's
`--cpu` flag would start one process only (it needs mpirun for more), while the DDP launch goes through
`torch.distributed.run` and gives CPU processes a gloo group. Checked here: one set of artifacts written by
rank 0 alone, SIGTERM (to the launching process, or to one rank only) stopping both ranks at the same step
with one checkpoint and exit 75, a stop request ending `cancelled` (exit 4), and resuming on 2 and on 1 process;
for the tiny SFT job (HF Trainer) and the tiny GLiNER2 job (felix's own loop, DDP-wrapped), whose resume on
2 processes must end with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch.multiprocessing as mp

from felix_train.checkpoints import list_checkpoints, verify_checkpoint
from felix_train.errors import SpecError
from felix_train.jobs import JobFolder
from felix_train.launch import ACCELERATE_CONFIG_DIR, accelerate_config, launch_command
from felix_train.trainers.context import RunControl, StopReason

ROOT = Path(__file__).resolve().parents[1]


# -- RunControl.sync: an all-reduce (max) of the ranks' stop codes -------------------------------------------------

CASES = [  # (rank 0 local state, rank 1 local state) -> the reason both ranks must see
    ((None, None), None),
    ((None, "signal"), StopReason.PREEMPT),
    (("signal", None), StopReason.PREEMPT),
    (("stop", "signal"), StopReason.STOP),  # a user's stop outranks a preemption
]


def _sync_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    seen = []
    for i, (states, _) in enumerate(CASES):
        job = JobFolder(f"job-{rank}-{i}", Path(out_dir) / f"home{rank}")  # a STOP file only this rank sees
        job.create()
        control = RunControl(job)
        if states[rank] == "stop":
            job.request_stop()
        if states[rank] == "signal":
            control._on_signal(signal.SIGTERM, None)
        reason = control.check()
        seen.append(reason.value if reason else None)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


def test_run_control_sync_gives_every_rank_the_same_reason(tmp_path):
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    expected = [reason.value if reason else None for _, reason in CASES]
    assert json.loads((tmp_path / "rank0.json").read_text()) == expected
    assert json.loads((tmp_path / "rank1.json").read_text()) == expected


def test_run_control_without_a_group_is_local(tmp_path):
    job = JobFolder("solo", tmp_path)
    job.create()
    control = RunControl(job)
    assert control.check() is None
    control._on_signal(signal.SIGTERM, None)
    assert control.check() == StopReason.PREEMPT
    job.request_stop()
    assert control.check() == StopReason.STOP


# -- the launch ------------------------------------------------------------------------------------------------------

def test_bundled_accelerate_configs_and_launch_command(tmp_path, monkeypatch):
    names = sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml"))
    assert names == ["ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp", "multi-node"]
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: load_config_from_file(str(ACCELERATE_CONFIG_DIR / f"{name}.yaml")).distributed_type.value
             for name in names}
    assert kinds == {"ddp": "MULTI_GPU", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED",
                     "fsdp": "FSDP", "multi-node": "MULTI_GPU"}

    assert accelerate_config("ddp") == ACCELERATE_CONFIG_DIR / "ddp.yaml"
    assert accelerate_config(str(ACCELERATE_CONFIG_DIR / "fsdp.yaml")) == ACCELERATE_CONFIG_DIR / "fsdp.yaml"
    with pytest.raises(SpecError, match="deepspeed-zero3"):  # the error lists the bundled names
        accelerate_config("zero9")
    monkeypatch.setenv("FELIX_ACCELERATE_CONFIG", "deepspeed-zero2")
    assert accelerate_config(None) == ACCELERATE_CONFIG_DIR / "deepspeed-zero2.yaml"

    cmd = launch_command(tmp_path / "s.json", job_id="j", home=tmp_path, num_processes=4,
                         config=ACCELERATE_CONFIG_DIR / "fsdp.yaml")
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "4"]
    assert cmd[cmd.index("--config_file") + 1] == str(ACCELERATE_CONFIG_DIR / "fsdp.yaml")
    assert "--multi_gpu" not in cmd  # the config says FSDP; --multi_gpu would turn it into plain DDP
    assert cmd[-8:] == ["-m", "felix_train", "run", str(tmp_path / "s.json"), "--job-id", "j", "--home", str(tmp_path)]
    monkeypatch.setenv("FELIX_NUM_MACHINES", "2")
    monkeypatch.setenv("FELIX_MACHINE_RANK", "1")
    monkeypatch.setenv("FELIX_MAIN_PROCESS_IP", "10.0.0.1")
    cmd = launch_command(tmp_path / "s.json", job_id="j", home=tmp_path, num_processes=16, config=None)
    assert "--multi_gpu" in cmd and "--config_file" not in cmd
    assert cmd[cmd.index("--num_machines") + 1] == "2" and cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.1"


# -- tiny SFT on 2 processes ---------------------------------------------------------------------------------------

MAX_STEPS = 40


def sft_spec(num_processes: int) -> dict:
    return {"base_model": "felix/tiny-llm", "datasets": [{"name": "felix-chat-mini"}], "learning_rate": 1e-2,
            "num_epochs": 1,
            "engine": {"batch_size": 2, "logging_steps": 1, "max_length": 256, "seed": 7, "report_to": [],
                       "eval": {"fraction": 0}, "max_steps": MAX_STEPS, "save_steps": 25,
                       "distributed": {"num_processes": num_processes, "config": "ddp"}}}


class Run:
    """`python -m felix_train SPEC --job-id ID` in the background (the launching process of a distributed job)."""

    def __init__(self, home: Path, tmp_path: Path, job_id: str, spec: dict):
        path = tmp_path / f"{job_id}-{spec['engine']['distributed']['num_processes']}-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "FELIX_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.job = JobFolder(job_id, home)
        self.logged = self.losses_logged()
        self.proc = subprocess.Popen([sys.executable, "-m", "felix_train", str(path), "--job-id", job_id], env=env,
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def losses_logged(self) -> int:
        path = self.job.metrics_path
        return path.read_text().count('"loss"') if path.exists() else 0

    def after_a_new_step(self, action, timeout: float = 90, steps: int = 1) -> None:
        """Call `action()` once this run has logged `steps` training steps (of its own, not a previous attempt's)."""
        deadline = time.monotonic() + timeout
        while self.losses_logged() < self.logged + steps:
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < deadline, "no training step logged in time"
            time.sleep(0.01)
        action()

    def rank(self, rank: int) -> psutil.Process:
        (proc,) = [p for p in psutil.Process(self.proc.pid).children(recursive=True)
                   if p.environ().get("RANK") == str(rank) and p.environ().get("LOCAL_RANK") is not None
                   and p.parent().environ().get("RANK") is None]
        return proc

    def wait(self, timeout: float = 120) -> int:
        self._stderr = self.proc.communicate(timeout=timeout)[1].decode(errors="replace")
        return self.proc.returncode

    def stderr(self) -> str:
        return getattr(self, "_stderr", "")[-4000:]


def loss_steps(job: JobFolder) -> list[int]:
    return [row["step"] for row in map(json.loads, job.metrics_path.read_text().splitlines()) if "loss" in row]


def assert_one_consistent_checkpoint_per_save(job: JobFolder, world: int) -> list:
    """Every committed checkpoint has a step of its own, intact files, and every rank's RNG state (saved together)."""
    checkpoints = list_checkpoints(job)
    steps = [c.step for c in checkpoints]
    assert len(steps) == len(set(steps)), steps
    log = job.log_path.read_text()
    for c in checkpoints:
        folder = job.checkpoints_dir / c.uuid
        assert verify_checkpoint(folder) == []
        assert sorted(p.name for p in folder.glob("rng_state*.pth")) == [f"rng_state_{r}.pth" for r in range(world)]
        assert log.count(f"checkpoint {c.uuid} saved at step {c.step}") == 1
    assert not list(job.work_dir.glob("staging-*")) and not list(job.root.glob(".model*"))
    return checkpoints


def test_sft_on_two_processes_preempt_on_every_or_one_rank_then_resume_on_one(model_store, tmp_path):
    home = model_store
    job = JobFolder("ddp-sft", home)

    # 1. SIGTERM to the launching process: forwarded to both ranks, which checkpoint at the same step and exit 75
    run = Run(home, tmp_path, job.id, sft_spec(2))
    run.after_a_new_step(lambda: run.proc.send_signal(signal.SIGTERM))
    assert run.wait() == 75, run.stderr()
    status = job.read_status()
    assert status["status"] == "requested", status
    log = job.log_path.read_text()
    assert log.count("felix/tiny-llm lora sft, 2 process(es)") == 1  # rank 0 alone writes train.log
    assert log.count("interrupted (preemption) at step") == 1
    (first,) = [c for c in assert_one_consistent_checkpoint_per_save(job, 2) if c.step == status["progress"]["step"]]
    steps = loss_steps(job)
    assert steps == list(range(1, first.step + 1)), "metrics.jsonl: one line per step, from rank 0 only"
    assert (job.work_dir / "launch-exit.json").exists()

    # 2. SIGTERM to rank 1 only: the all-reduced stop code stops rank 0 at the same step; one checkpoint for both
    run = Run(home, tmp_path, job.id, sft_spec(2))
    run.after_a_new_step(lambda: run.rank(1).send_signal(signal.SIGTERM))
    assert run.wait() == 75, run.stderr()
    log = job.log_path.read_text()
    assert f"resuming training at step {first.step} from checkpoint {first.uuid}" in log
    assert log.count("interrupted (preemption) at step") == 2
    second = assert_one_consistent_checkpoint_per_save(job, 2)[-1]
    assert second.step > first.step and job.read_status()["progress"]["step"] == second.step
    assert loss_steps(job) == list(range(1, second.step + 1))

    # 3. the same job on 1 process (DDP checkpoints resume on any number of processes): completes
    run = Run(home, tmp_path, job.id, sft_spec(1))
    assert run.wait() == 0, run.stderr()
    status = job.read_status()
    assert status["status"] == "complete" and status["metrics"]["steps"] == MAX_STEPS
    assert f"resuming training at step {second.step} from checkpoint {second.uuid}" in job.log_path.read_text()
    assert loss_steps(job) == list(range(1, MAX_STEPS + 1))
    assert (job.model_dir / "adapter_model.safetensors").exists()
    assert json.loads(job.spec_path.read_text())["engine"]["distributed"]["num_processes"] == 1


def test_sft_on_two_processes_stop_request_cancels_both(model_store, tmp_path):
    home = model_store
    job = JobFolder("ddp-sft-stop", home)
    run = Run(home, tmp_path, job.id, sft_spec(2))
    run.after_a_new_step(job.request_stop)
    assert run.wait() == 4, run.stderr()
    status = job.read_status()
    assert status["status"] == "cancelled" and not job.stop_requested()
    (checkpoint,) = assert_one_consistent_checkpoint_per_save(job, 2)
    assert checkpoint.step == status["progress"]["step"]
    assert job.log_path.read_text().count("stop requested at step") == 1
    assert loss_steps(job) == list(range(1, checkpoint.step + 1))
    assert not job.model_dir.exists()


# -- tiny GLiNER2 on 2 processes (felix's own loop over gliner2's ExtractorTrainer, wrapped in DDP) -----------------

G2_DATASET = "ddp-g2-toy"


def ner_records(n: int) -> list[dict]:
    people, cities = ["John Smith", "Mary Jones", "Emma Davis"], ["London", "Paris", "Tokyo"]
    return [{"input": f"{people[i % 3]} lives in {cities[i // 3 % 3]} .",
             "output": {"entities": {"person": [people[i % 3]], "location": [cities[i // 3 % 3]]}}} for i in range(n)]


@pytest.fixture
def g2_home(model_store, tmp_path) -> Path:
    pytest.importorskip("gliner2")
    from felix_train.data.registry import DatasetRegistry

    data = tmp_path / "ner.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ner_records(45)), encoding="utf-8")
    assert DatasetRegistry(model_store).add(G2_DATASET, data, overwrite=True).state.value == "ready"
    return model_store


def gliner2_spec(num_processes: int, training_type: str = "full", **engine) -> dict:
    # 45 records: 9 held out, 36 to train on; batch 4 per process: on 2 processes 5 batches an epoch, the last one
    # (4 records) all rank 0's, so rank 1 runs a stand-in that counts for nothing; on 1 process 9 batches
    return {"base_model": "felix/tiny-gliner2", "datasets": [{"name": G2_DATASET}], "training_type": training_type,
            "learning_rate": 5e-3, "num_epochs": 8,
            "engine": {"batch_size": 4, "logging_steps": 1, "report_to": [], "eval": {"fraction": 0.2},
                       "distributed": {"num_processes": num_processes, "config": "ddp"}, **engine}}


def g2_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return {**load_file(str(model_dir / "adapter" / "adapter_model.safetensors")),
            **{f"merged.{k}": v for k, v in load_file(str(model_dir / "merged" / "model.safetensors")).items()}}


def assert_g2_checkpoints(job: JobFolder) -> list:
    checkpoints = list_checkpoints(job)
    assert len({c.step for c in checkpoints}) == len(checkpoints)
    assert all(verify_checkpoint(job.checkpoints_dir / c.uuid) == [] for c in checkpoints)
    assert not list(job.work_dir.glob("staging-*")) and not list(job.root.glob(".model*"))
    return checkpoints


def test_gliner2_on_two_processes_preempt_one_rank_resumes_to_the_same_weights(g2_home, tmp_path):
    home = g2_home
    spec = gliner2_spec(2, "lora", save_steps=4, lora={"r": 4, "dropout": 0.1})  # dropout: per-rank torch RNG
    job = JobFolder("ddp-gliner2-lora", home)

    # SIGTERM to rank 1 only, in the second epoch (the ranks' Python RNGs differ after the stand-in batch):
    # both ranks stop at the same step; rank 0 writes one checkpoint, with each rank's RNG
    run = Run(home, tmp_path, job.id, spec)
    run.after_a_new_step(lambda: run.rank(1).send_signal(signal.SIGTERM), steps=7)
    assert run.wait() == 75, run.stderr()
    status = job.read_status()
    assert status["status"] == "requested", status
    log = job.log_path.read_text()
    assert log.count("felix/tiny-gliner2 lora sft, 2 process(es)") == 1 and "× 2 processes" in log
    assert log.count("preempted (signal) at step") == 1
    stopped = assert_g2_checkpoints(job)[-1]
    assert stopped.step == status["progress"]["step"] and 7 <= stopped.step < 40
    assert loss_steps(job) == list(range(1, stopped.step + 1))

    # the same job on 2 processes: resumes from that checkpoint and completes
    run = Run(home, tmp_path, job.id, spec)
    assert run.wait() == 0, run.stderr()
    status = job.read_status()
    assert status["status"] == "complete", status
    assert f"resumed at step {stopped.step}" in job.log_path.read_text()
    assert loss_steps(job) == list(range(1, 41)) and status["metrics"]["global_step"] == 40
    assert assert_g2_checkpoints(job)[-1].step == 40

    # an uninterrupted run on 2 processes: the same weights, loss and F1
    reference = JobFolder("ddp-gliner2-lora-ref", home)
    run = Run(home, tmp_path, reference.id, spec)
    assert run.wait() == 0, run.stderr()
    a, b = g2_weights(job.model_dir), g2_weights(reference.model_dir)
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6
    ma, mb = status["metrics"], reference.read_status()["metrics"]
    assert ma["train_loss"] == pytest.approx(mb["train_loss"], rel=1e-6)
    assert ma["eval_f1"] == pytest.approx(mb["eval_f1"], abs=1e-9)


def test_gliner2_on_two_processes_stop_request_then_resume_on_one(g2_home, tmp_path):
    home = g2_home
    job = JobFolder("ddp-gliner2-stop", home)

    # a stop request (the job's STOP file): both ranks stop at the same step, one checkpoint, cancelled
    run = Run(home, tmp_path, job.id, gliner2_spec(2))
    run.after_a_new_step(job.request_stop)
    assert run.wait() == 4, run.stderr()
    status = job.read_status()
    assert status["status"] == "cancelled" and not job.stop_requested()
    (checkpoint,) = assert_g2_checkpoints(job)
    assert checkpoint.step == status["progress"]["step"] < 40
    assert job.log_path.read_text().count("stop requested at step") == 1
    assert loss_steps(job) == list(range(1, checkpoint.step + 1))
    assert not job.model_dir.exists()

    # the same job on 1 process: the same place in the epoch's order, 9 batches an epoch from there on
    run = Run(home, tmp_path, job.id, gliner2_spec(1))
    assert run.wait() == 0, run.stderr()
    status = job.read_status()
    assert status["status"] == "complete", status
    log = job.log_path.read_text()
    assert f"resumed at step {checkpoint.step}" in log and "resuming on 1 process(es) a checkpoint written by 2" in log
    epoch, batch = divmod(checkpoint.step, 5)  # where the 2-process run stopped; batch 8 records → 4 records
    total = checkpoint.step + (9 - batch * 2) + (8 - epoch - 1) * 9
    steps = loss_steps(job)
    assert steps == list(range(1, total + 1)) and status["metrics"]["global_step"] == total
    assert status["progress"]["total_steps"] == total and assert_g2_checkpoints(job)[-1].step == total
    assert status["metrics"]["epoch"] == pytest.approx(8)
    assert (job.model_dir / "model.safetensors").exists()


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_gliner2_refuses_a_sharded_launch(variable, monkeypatch):
    pytest.importorskip("gliner2")
    from types import SimpleNamespace

    from felix_train.trainers.gliner2 import check_launch

    spec = SimpleNamespace(engine=SimpleNamespace(distributed=SimpleNamespace(config="fsdp", num_processes=2)))
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    check_launch(spec)  # DDP (or no launch): fine
    monkeypatch.setenv(variable, "true")
    with pytest.raises(SpecError) as err:
        check_launch(spec)
    (item,) = err.value.errors
    assert item.loc == ("engine", "distributed", "config") and item.type == "distributed_not_supported"
    assert "engine.distributed.config: ddp" in item.msg


# -- tiny DPO and GRPO on 2 processes: the same launch and bridge as SFT ---------------------------------------------

def rl_spec(algorithm: str) -> dict:
    """configs/dpo-tiny.yaml and configs/grpo-tiny.yaml, cut to 4 steps on 2 processes."""
    import yaml

    spec = yaml.safe_load((ROOT / "configs" / f"{algorithm}-tiny.yaml").read_text())
    spec["engine"].update(max_steps=4, logging_steps=1, save_steps=2, report_to=[], eval={"fraction": 0},
                          batch_size=4 if algorithm == "dpo" else 8,
                          distributed={"num_processes": 2, "config": "ddp"})
    spec["engine"].pop("export", None)
    return spec


@pytest.mark.parametrize("algorithm", ["dpo", "grpo"])
def test_rl_on_two_processes_completes_with_one_set_of_artifacts(model_store, tmp_path, algorithm):
    home = model_store
    job = JobFolder(f"ddp-{algorithm}", home)
    run = Run(home, tmp_path, job.id, rl_spec(algorithm))
    assert run.wait(timeout=300) == 0, run.stderr()
    status = job.read_status()
    assert status["status"] == "complete" and status["progress"]["step"] == 4
    log = job.log_path.read_text()
    assert log.count("2 process(es)") == 1 and log.count("job complete") == 1  # rank 0 alone writes the log
    assert loss_steps(job) == [1, 2, 3, 4]  # one metrics line per step, not one per rank
    assert [c.step for c in list_checkpoints(job)] == [2, 4]
    assert all(verify_checkpoint(job.checkpoints_dir / c.uuid) == [] for c in list_checkpoints(job))
    assert (job.model_dir / "adapter_model.safetensors").exists()
