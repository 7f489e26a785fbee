"""`resolve_source` and `read_records` on hand-made folders and files: no model loads, no torch."""

from __future__ import annotations

import json

import pytest

from felix_train.catalog import ModelFamily
from felix_train.data.formats import DatasetFormat
from felix_train.errors import DatasetError
from felix_train.evaluate import read_records
from felix_train.models.source import RefKind, SourceNotFound, resolve_source


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _gliner2_lora_job(home, job_id="g2-job"):
    """A GLiNER2 LoRA job's layout: model/adapter/, model/merged/, model/felix_model.json, spec.json."""
    job = home / "jobs" / job_id
    _write(job / "spec.json", {"base_model": "felix/tiny-gliner2", "catalog_model": "felix/tiny-gliner2"})
    _write(job / "model" / "merged" / "config.json", {"architecture": "span"})
    _write(job / "model" / "adapter" / "adapter_config.json", {"base_model_name_or_path": None})
    _write(job / "model" / "felix_model.json", {
        "family": "gliner2", "base_model": "felix/tiny-gliner2", "base_model_path": str(home / "nowhere"),
        "files": {"adapter": {"path": "adapter/", "format": "peft-lora"},
                  "merged": {"path": "merged/", "format": "gliner2"}}})
    return job


def test_a_job_id_a_job_folder_and_its_model_folder_resolve_alike(felix_home):
    job = _gliner2_lora_job(felix_home)
    by_id = resolve_source("g2-job")
    by_folder = resolve_source(str(job))
    by_model = resolve_source(str(job / "model"))
    for ref in (by_id, by_folder, by_model):
        assert ref.kind is RefKind.JOB
        assert ref.family is ModelFamily.GLINER2
        assert ref.model_dir == job / "model"
        assert ref.weights == job / "model" / "merged"
        assert ref.adapter == job / "model" / "adapter"
        assert ref.base_path is None  # the recorded base folder is gone: `base()` would use the catalog id
        assert ref.catalog_id == "felix/tiny-gliner2"
        assert ref.spec["base_model"] == "felix/tiny-gliner2"
        assert ref.job_dir == job
    assert by_id.describe()["job"] == "g2-job"


def test_an_llm_adapter_folder_names_its_base(tmp_path, felix_home):
    base = tmp_path / "base"
    _write(base / "config.json", {"model_type": "llama"})
    adapter = tmp_path / "adapter"
    _write(adapter / "adapter_config.json", {"base_model_name_or_path": str(base)})
    ref = resolve_source(str(adapter))
    assert ref.kind is RefKind.FOLDER and ref.family is ModelFamily.CAUSAL_LM
    assert ref.adapter == adapter and ref.weights is None and ref.base() == base


def test_an_adapter_saved_by_gliner2s_own_trainer_is_gliner2(tmp_path, felix_home):
    adapter = tmp_path / "final"
    _write(adapter / "adapter_config.json", {"base_model_class": "GLiNER2", "base_model_name_or_path": None})
    assert resolve_source(str(adapter)).family is ModelFamily.GLINER2


@pytest.mark.parametrize("config, family", [
    ({"architecture": "span", "model_type": "extractor"}, ModelFamily.GLINER2),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, ModelFamily.CAUSAL_LM),
    ({}, None),
])
def test_a_plain_model_folder_tells_its_family_by_its_config(tmp_path, config, family):
    _write(tmp_path / "m" / "config.json", config)
    ref = resolve_source(str(tmp_path / "m"))
    assert ref.family is family and ref.weights == tmp_path / "m" and ref.job_dir is None


def test_unknown_sources_and_jobs_without_a_model_say_so(tmp_path, felix_home):
    with pytest.raises(SourceNotFound, match="no model at 'no-such-job'.*models list"):
        resolve_source("no-such-job")
    with pytest.raises(SourceNotFound, match="no model at 'someone/unknown-model'"):
        resolve_source("someone/unknown-model")
    _write(felix_home / "jobs" / "queued" / "status.json", {"status": "requested"})
    with pytest.raises(SourceNotFound, match="job 'queued' has no model yet \\(status requested\\)"):
        resolve_source("queued")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFound, match="holds no model"):
        resolve_source(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SourceNotFound, match="is a file"):
        resolve_source(str(tmp_path / "file.txt"))


def test_read_records_detects_the_format_and_honours_limit(tmp_path):
    path = tmp_path / "chats.jsonl"
    lines = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
             {"prompt": "2+2=", "completion": "4"}, {"text": "plain"}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n", encoding="utf-8")
    fmt, records = read_records(path)
    assert fmt is DatasetFormat.MESSAGES  # SFT formats mix: one scorer reads them all
    assert [line for line, _ in records] == [1, 2, 3]
    assert len(read_records(path, limit=2)[1]) == 2


@pytest.mark.parametrize("content, message", [
    ('{"input": "a", "output": {"entities": {}}}\n{"messages": []}\n', "line 2 is `messages` but line 1 is `gliner2`"),
    ('{"foo": 1}\n', "line 1: cannot tell the format"),
    ('{"text": "a"}\nnot json\n', "line 2: invalid JSON"),
    ("\n\n", "holds no record"),
])
def test_read_records_refuses_what_it_cannot_score(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        read_records(path)
    with pytest.raises(DatasetError, match="cannot read"):
        read_records(tmp_path / "missing.jsonl")
