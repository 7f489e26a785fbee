"""NER quality (issue 17 item 5): felix's defaults against gliner2's trainer and the token-classification recipe.

On an unseen-mention split of `../shared/data/ner/wnut17_train.jsonl` (`split.py`), each side trains in its own
process on the train part and is scored on the test part with the same exact-match scorer:

- felix: the train part registered (`felix-train datasets add`), `python -m felix_train` with a spec of only
  `{base_model, datasets}` (`training_type: full` for the full side), scored with `felix-train eval JOB test.jsonl
  --json` (the thresholds the job saved, if any);
- gliner2: `baselines/gliner2_trainer.py` (`ExtractorTrainer`, its own defaults) from the same GLiNER2 base folder
  felix materialises, scored with `felix-train eval MODEL test.jsonl --json --threshold 0.5`;
- token classification: `baselines/token_classification.py` on the base's MiniLM encoder, scored inside the
  script with `felix_train.metrics_ner`.

A seed other than 42 (felix's default) goes to felix as `engine.seed`, and to the baselines as `--seed`.
"""

from __future__ import annotations

from pathlib import Path

from bench.children import ROOT, say
from bench.quality.harness import (Context, felix_eval, job_error, ner_figures, register, run_job, run_script,
                                   skip_reason)
from bench.quality.split import write_split

WNUT = "ner/wnut17_train.jsonl"
TRAIN_NAME = "wnut17-unseen-train"
BASELINES = ROOT / "bench" / "quality" / "baselines"
QUICK_LIMITS = (300, 200)  # train / test records under --quick


def prepare_split(ctx: Context, train_limit: int | None = None, test_limit: int | None = None) -> dict:
    """The unseen-mention split under the work folder, its train part registered as `wnut17-unseen-train`;
    `{"skipped": reason}` without the shared data."""
    reason = skip_reason(ctx, WNUT)
    if reason:
        say(f"NER skipped: {reason}")
        return {"skipped": reason}
    if ctx.quick:
        train_limit, test_limit = train_limit or QUICK_LIMITS[0], test_limit or QUICK_LIMITS[1]
    split = write_split(ctx.data_dir / WNUT, ctx.folder("ner-split"), train_limit=train_limit, test_limit=test_limit)
    register(ctx, TRAIN_NAME, Path(split["train_path"]))
    say(f"unseen-mention split: train {split['train']}, test {split['test']}; test mentions among train mentions: "
        f"{split['test_mentions_in_train_mentions']}")
    return split


def felix_side(ctx: Context, model_id: str, training_type: str, seed: int, test: Path) -> dict:
    spec: dict = {"base_model": model_id, "datasets": [{"name": TRAIN_NAME}]}
    if training_type == "full":
        spec["training_type"] = "full"
    if seed != 42:
        spec["engine"] = {"seed": seed}
    job_id = f"q-ner-felix-{training_type}-s{seed}"
    run = run_job(ctx, job_id, spec)
    report = felix_eval(ctx, job_id, job_id, test) if run["status"] == "complete" else \
        {"error": job_error(run)}
    own = {k: v for k, v in run["metrics"].items() if k.startswith("eval_") and "/" not in k}
    return {**ner_figures(report), "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "job": job_id,
            "job_eval": own, "eval_s": report.get("wall_s")}


def gliner2_side(ctx: Context, base_path: str, training_type: str, seed: int, train: Path, test: Path) -> dict:
    tag = f"q-ner-gliner2-{training_type}-s{seed}"
    out = ctx.folder(tag)
    args = [str(BASELINES / "gliner2_trainer.py"), "--model", base_path, "--data", str(train), "--output-dir", str(out),
            "--seed", str(seed)] + (["--full"] if training_type == "full" else [])
    run = run_script(ctx, tag, args)
    report = felix_eval(ctx, tag, str(out / "model"), test, threshold=0.5) if run["exit_code"] == 0 else \
        {"error": f"exit {run['exit_code']}; see {run['log']}"}
    return {**ner_figures(report), "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "eval_s": report.get("wall_s")}


def token_classification_side(ctx: Context, encoder: str, seed: int, train: Path, test: Path) -> dict:
    import json

    tag = f"q-ner-tokcls-s{seed}"
    out = ctx.folder(tag)
    run = run_script(ctx, tag, [str(BASELINES / "token_classification.py"), "--model", encoder, "--train", str(train),
                                "--test", str(test), "--output-dir", str(out), "--seed", str(seed)])
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if run["exit_code"] == 0 and report_path.exists() else \
        {"error": f"exit {run['exit_code']}; see {run['log']}"}
    return {**ner_figures(report), "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "train_s": report.get("train_s")}


def run_ner(ctx: Context, split: dict, *, model_id: str, base_path: str, encoder: str,
            training_types: list[str], out: dict | None = None) -> dict:
    """Every side for every seed and training type on `split` (`prepare_split`), filled into `out` as each side
    finishes (a failure keeps the sides done): `{"model", "split", "seeds": {seed: {side: figures}}}`."""
    train, test = Path(split["train_path"]), Path(split["test_path"])
    out = out if out is not None else {}
    out.update(model=model_id, split=split, seeds=out.get("seeds") or {})
    for seed in ctx.seeds:
        sides: dict = out["seeds"].setdefault(str(seed), {})  # filled as each side finishes
        for training_type in training_types:
            sides[f"felix-{training_type}"] = felix_side(ctx, model_id, training_type, seed, test)
            sides[f"gliner2-{training_type}"] = gliner2_side(ctx, base_path, training_type, seed, train, test)
        sides["token-classification"] = token_classification_side(ctx, encoder, seed, train, test)
    return out
