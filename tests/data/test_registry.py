"""The dataset registry: add/get/list/delete, manifests, built-ins, and `check_datasets` for job specs."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from felix_train.data import registry as registry_module
from felix_train.data.formats import DatasetFormat
from felix_train.data.registry import (
    DatasetManifest,
    DatasetRegistry,
    DatasetState,
    check_datasets,
    validate_dataset_name,
)
from felix_train.errors import DatasetError, ErrorItem
from felix_train.jobs import read_json

MESSAGES = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}]},
]
PREFERENCE = [{"prompt": "Q", "chosen": "good", "rejected": "bad"}]
NER = [{"input": "Ann lives in Rome.", "output": {"entities": {"person": ["Ann"], "location": ["Rome"]}}}]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def builtin_dir(tmp_path, monkeypatch) -> Path:
    """An empty built-in folder, so the package's own built-ins do not leak into these tests."""
    folder = tmp_path / "builtin"
    folder.mkdir()
    monkeypatch.setattr(registry_module, "BUILTIN_DIR", folder)
    return folder


@pytest.fixture
def home(tmp_path, builtin_dir) -> Path:
    return tmp_path / "felix"


@pytest.fixture
def reg(home) -> DatasetRegistry:
    return DatasetRegistry(home)


def test_add_ready_dataset_writes_manifest_and_data(tmp_path, home, reg):
    src = write_jsonl(tmp_path / "chat.jsonl", MESSAGES)
    manifest = reg.add("chat-1", src)

    assert manifest.state is DatasetState.READY
    assert manifest.format is DatasetFormat.MESSAGES
    assert manifest.num_records == 2 and manifest.num_errors == 0 and manifest.errors == []
    assert manifest.columns == ["messages"] and manifest.stats["chars"]["max"] == 10
    assert manifest.source == "chat.jsonl" and manifest.error is None and not manifest.builtin
    assert manifest.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()

    folder = home / "datasets" / "chat-1"
    assert (folder / "data.jsonl").read_bytes() == src.read_bytes()
    assert reg.data_path("chat-1") == folder / "data.jsonl"
    # Round trip: what is on disk reads back equal; no temp files left behind.
    assert DatasetManifest.model_validate(read_json(folder / "manifest.json")) == manifest
    assert reg.get("chat-1") == manifest
    assert sorted(p.name for p in folder.iterdir()) == ["data.jsonl", "manifest.json"]


def test_failed_dataset_keeps_its_errors(tmp_path, home, reg):
    src = write_jsonl(tmp_path / "bad.jsonl", [MESSAGES[0], "{not json", {"messages": [{"role": "bot", "content": "x"}]}])
    manifest = reg.add("bad", src)

    assert manifest.state is DatasetState.FAILED
    assert [(e.line, e.type) for e in manifest.errors] == [(2, "invalid_json"), (3, "unknown_role"), (3, "no_assistant_turn")]
    assert manifest.num_errors == 3
    assert manifest.error.startswith("3 problem(s) in bad.jsonl: line 2: invalid JSON")
    reread = DatasetRegistry(home).get("bad")
    assert reread.state is DatasetState.FAILED and reread.errors == manifest.errors


def test_manifest_keeps_at_most_200_errors(tmp_path, reg):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"text": ""}] * 250)
    manifest = reg.add("bad", src)
    assert len(manifest.errors) == 200 and manifest.num_errors == 250


def test_empty_file_fails(tmp_path, reg):
    manifest = reg.add("empty", write_jsonl(tmp_path / "e.jsonl", []))
    assert manifest.state is DatasetState.FAILED and manifest.errors[0].type == "empty_file"


def test_add_existing_needs_overwrite(tmp_path, reg):
    reg.add("d", write_jsonl(tmp_path / "a.jsonl", MESSAGES))
    with pytest.raises(DatasetError, match="already exists"):
        reg.add("d", write_jsonl(tmp_path / "b.jsonl", PREFERENCE))
    assert reg.get("d").format is DatasetFormat.MESSAGES
    manifest = reg.add("d", tmp_path / "b.jsonl", overwrite=True)
    assert manifest.format is DatasetFormat.PREFERENCE and manifest.source == "b.jsonl"


def test_add_missing_source_file(tmp_path, home, reg):
    with pytest.raises(DatasetError, match="no file"):
        reg.add("d", tmp_path / "nope.jsonl")
    assert not (home / "datasets" / "d").exists()


def test_register_processing_then_validate(tmp_path, home, reg):
    manifest = reg.register_processing("up", io.BytesIO(json.dumps(PREFERENCE[0]).encode() + b"\n"), source="prefs.jsonl")
    assert manifest.state is DatasetState.PROCESSING and manifest.format is None
    assert reg.get("up").state is DatasetState.PROCESSING
    assert read_json(home / "datasets" / "up" / "manifest.json")["state"] == "processing"

    manifest = reg.validate("up")
    assert manifest.state is DatasetState.READY and manifest.format is DatasetFormat.PREFERENCE
    assert manifest.source == "prefs.jsonl" and manifest.validated_at is not None


def test_validate_unknown_dataset(reg):
    with pytest.raises(DatasetError, match="no dataset named 'ghost'"):
        reg.validate("ghost")


def test_get_unknown_suggests_close_names(tmp_path, reg):
    reg.add("dolly-qa", write_jsonl(tmp_path / "a.jsonl", MESSAGES))
    with pytest.raises(DatasetError) as err:
        reg.get("dolly-q")
    assert str(err.value) == "no dataset named 'dolly-q'; did you mean 'dolly-qa'? `felix-train datasets list` shows them"
    with pytest.raises(DatasetError, match=r"^no dataset named 'zzz'; `felix-train datasets list` shows them$"):
        reg.get("zzz")


def test_list_and_delete(tmp_path, reg):
    assert reg.list() == []
    reg.add("b", write_jsonl(tmp_path / "b.jsonl", MESSAGES))
    reg.add("a", write_jsonl(tmp_path / "a.jsonl", PREFERENCE))
    assert [m.name for m in reg.list()] == ["a", "b"]
    reg.delete("a")
    assert [m.name for m in reg.list()] == ["b"]
    with pytest.raises(DatasetError, match="no dataset named 'a'"):
        reg.get("a")
    with pytest.raises(DatasetError, match="no dataset named 'a'"):
        reg.delete("a")


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "a\\b", "", ".hidden", "-x", "x\n", "a" * 129, "a b", None])
def test_bad_names_are_rejected(tmp_path, home, reg, name):
    src = write_jsonl(tmp_path / "a.jsonl", MESSAGES)
    with pytest.raises(DatasetError, match="dataset name must match"):
        validate_dataset_name(name)
    for call in (lambda: reg.add(name, src), lambda: reg.get(name), lambda: reg.delete(name), lambda: reg.data_path(name)):
        with pytest.raises(DatasetError, match="dataset name must match"):
            call()
    assert not (tmp_path / "x").exists() and not (home / "x").exists()


def test_felix_home_env(tmp_path, builtin_dir, monkeypatch):
    monkeypatch.setenv("FELIX_HOME", str(tmp_path / "envhome"))
    DatasetRegistry().add("d", write_jsonl(tmp_path / "a.jsonl", MESSAGES))
    assert (tmp_path / "envhome" / "datasets" / "d" / "manifest.json").is_file()


def test_builtin_is_registered_on_first_get(builtin_dir, home, reg):
    write_jsonl(builtin_dir / "tiny-ner.jsonl", NER)
    assert not (home / "datasets" / "tiny-ner").exists()

    manifest = reg.get("tiny-ner")
    assert manifest.builtin and manifest.state is DatasetState.READY and manifest.format is DatasetFormat.GLINER2
    assert manifest.source == "tiny-ner.jsonl" and manifest.num_records == 1
    assert (home / "datasets" / "tiny-ner" / "data.jsonl").is_file()

    reg.delete("tiny-ner")
    assert reg.data_path("tiny-ner").is_file()  # comes back on next use


def test_list_includes_builtins(tmp_path, builtin_dir, reg):
    write_jsonl(builtin_dir / "quick.jsonl", MESSAGES)
    write_jsonl(builtin_dir / "broken.jsonl", ["{"])
    reg.add("mine", write_jsonl(tmp_path / "m.jsonl", PREFERENCE))
    listed = {m.name: m for m in reg.list()}
    assert sorted(listed) == ["broken", "mine", "quick"]
    assert listed["quick"].builtin and listed["quick"].state is DatasetState.READY
    assert listed["broken"].builtin and listed["broken"].state is DatasetState.FAILED
    assert not listed["mine"].builtin


def test_missing_builtin_dir_is_fine(tmp_path, home, monkeypatch):
    monkeypatch.setattr(registry_module, "BUILTIN_DIR", tmp_path / "does-not-exist")
    assert DatasetRegistry(home).list() == []


# -- check_datasets ---------------------------------------------------------------------------------------------

def test_check_datasets_reports_every_problem(tmp_path, home, reg):
    reg.add("chat", write_jsonl(tmp_path / "c.jsonl", MESSAGES))
    reg.add("broken", write_jsonl(tmp_path / "b.jsonl", ["{"]))
    reg.register_processing("pending", write_jsonl(tmp_path / "p.jsonl", MESSAGES))
    reg.add("prefs", write_jsonl(tmp_path / "h.jsonl", PREFERENCE))

    manifests, errors = check_datasets(["chat", "nope", "broken", "pending", "prefs", "../x"], "causal_lm", "sft", home=home)

    assert [m.name for m in manifests] == ["chat", "broken", "pending", "prefs"]
    assert [(e.loc, e.type) for e in errors] == [
        (("datasets", 1, "name"), "dataset_not_found"),
        (("datasets", 2, "name"), "dataset_not_ready"),
        (("datasets", 3, "name"), "dataset_not_ready"),
        (("datasets", 4, "name"), "dataset_format_mismatch"),
        (("datasets", 5, "name"), "dataset_not_found"),
    ]
    assert all(isinstance(e, ErrorItem) for e in errors)
    assert "no dataset named 'nope'" in errors[0].msg
    assert "`failed`" in errors[1].msg and "invalid JSON" in errors[1].msg
    assert "`processing`" in errors[2].msg
    assert errors[3].msg.startswith(
        "dataset 'prefs' is `preference` but `sft` on causal_lm needs one of messages, prompt_completion, text"
    )
    assert "training_algorithm: dpo" in errors[3].msg


def test_check_datasets_ok(tmp_path, builtin_dir, home, reg):
    reg.add("prefs", write_jsonl(tmp_path / "h.jsonl", PREFERENCE))
    write_jsonl(builtin_dir / "tiny-ner.jsonl", NER)
    manifests, errors = check_datasets(["prefs"], "causal_lm", "dpo", home=home)
    assert errors == [] and [m.name for m in manifests] == ["prefs"]
    manifests, errors = check_datasets(["tiny-ner"], "gliner2", "sft", home=home)
    assert errors == [] and manifests[0].builtin
    _, errors = check_datasets(["tiny-ner"], "causal_lm", "grpo", home=home)
    assert [e.type for e in errors] == ["dataset_format_mismatch"]
    assert "needs one of prompt; convert the file" in errors[0].msg


def test_validation_stays_light(tmp_path):
    """Validation and the registry never import torch, transformers or gliner2."""
    import subprocess
    import sys

    src = write_jsonl(tmp_path / "n.jsonl", NER)
    code = (
        "import sys; from felix_train.data.registry import DatasetRegistry; "
        f"DatasetRegistry({str(tmp_path / 'h')!r}).add('n', {str(src)!r}); "
        "heavy = [m for m in ('torch', 'transformers', 'gliner2', 'trl') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# -- per-user namespaces ------------------------------------------------------------------------------------------

def test_a_users_datasets_live_in_their_own_namespace(tmp_path, builtin_dir, home, reg):
    write_jsonl(builtin_dir / "tiny-ner.jsonl", NER)
    alice, bob = reg.for_owner(1), DatasetRegistry(home, owner=2)
    manifest = alice.add("ner", write_jsonl(tmp_path / "a.jsonl", NER))
    assert manifest.name == "ner" and manifest.state is DatasetState.READY
    assert alice.data_path("ner") == home / "datasets" / "_users" / "1" / "ner" / "data.jsonl"
    bob.add("u1--ner", write_jsonl(tmp_path / "b.jsonl", MESSAGES))  # a name, not a namespace
    assert bob.get("u1--ner").name == "u1--ner" and bob.get("u1--ner").format is DatasetFormat.MESSAGES

    # each sees their own and the built-ins; nobody else's; the shared registry sees no user's
    assert [m.name for m in alice.list()] == ["ner", "tiny-ner"]
    assert [m.name for m in bob.list()] == ["tiny-ner", "u1--ner"]
    for registry, name in ((bob, "ner"), (alice, "u1--ner"), (reg, "ner"), (reg, "u1--ner")):
        with pytest.raises(DatasetError, match="no dataset named"):
            registry.get(name)
    assert [m.name for m in reg.list()] == ["tiny-ner"]
    assert bob.data_path("tiny-ner") == home / "datasets" / "tiny-ner" / "data.jsonl"

    # a user's dataset of a built-in's name wins for that user only
    alice.add("tiny-ner", write_jsonl(tmp_path / "c.jsonl", MESSAGES))
    assert alice.get("tiny-ner").format is DatasetFormat.MESSAGES and bob.get("tiny-ner").builtin
    alice.delete("tiny-ner")
    assert alice.get("tiny-ner").builtin

    manifests, errors = check_datasets(["ner", "tiny-ner", "u1--ner"], "gliner2", "sft", home=home, owner=1)
    assert [m.name for m in manifests] == ["ner", "tiny-ner"] and [e.type for e in errors] == ["dataset_not_found"]


def test_a_legacy_shared_folder_is_read_as_the_users_own(tmp_path, home, reg):
    """Before per-user folders the API kept user 3's `ner` as the shared `u3--ner`: it still resolves."""
    reg.add("u3--ner", write_jsonl(tmp_path / "a.jsonl", NER))
    user = reg.for_owner(3)
    assert user.get("ner").name == "ner" and user.get("ner").state is DatasetState.READY
    assert user.data_path("ner") == home / "datasets" / "u3--ner" / "data.jsonl"
    assert [m.name for m in user.list()] == ["ner"] and reg.for_owner(31).list() == []
    assert reg.get("u3--ner").name == "u3--ner"  # a job spec of that time still runs
    user.delete("ner")
    assert not (home / "datasets" / "u3--ner").exists()


def test_validate_quickstart_never_imports_torch(felix_home):
    """`felix-train validate configs/quickstart.yaml` checks its (built-in) dataset without loading torch."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; from felix_train.cli import main; "
        "rc = main(['validate', 'configs/quickstart.yaml']); assert rc == 0, rc; "
        "heavy = [m for m in ('torch', 'transformers', 'gliner2', 'trl') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr


# -- issue 16: a record nested 100,000 deep, duplicate keys, a validation that breaks off ----------------------------

def test_a_record_nested_100000_deep_ends_failed_from_the_cli(tmp_path, home, capsys):
    """#3: `felix-train datasets add` on a record nested 100,000 deep: exit 3, the dataset `failed` with an
    `invalid_json` line item, never left `processing`."""
    from felix_train.cli import main

    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(MESSAGES[0]) + "\n" + '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert main(["--home", str(home), "datasets", "add", "deep", str(path)]) == 3
    manifest = DatasetRegistry(home).get("deep")
    assert manifest.state is DatasetState.FAILED
    assert [(e.line, e.type) for e in manifest.errors] == [(2, "invalid_json")]
    assert "nested too deeply" in capsys.readouterr().err


def test_a_validation_that_breaks_off_never_leaves_the_dataset_processing(tmp_path, reg, monkeypatch):
    """#3: a RecursionError (or anything else) inside validation still ends the manifest `failed`."""
    path = write_jsonl(tmp_path / "m.jsonl", MESSAGES)

    def deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(registry_module, "validate_file", deep)
    manifest = reg.add("m", path)
    assert manifest.state is DatasetState.FAILED and "nested too deeply" in manifest.error

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(registry_module, "validate_file", broken)
    with pytest.raises(KeyError):
        reg.add("m", path, overwrite=True)
    manifest = reg.get("m")
    assert manifest.state is DatasetState.FAILED and "KeyError" in manifest.error


def test_duplicate_keys_in_a_record_are_a_line_item(tmp_path, reg):
    """#4: `{"text": "a", "text": "b"}` is refused with its line and the key, not read as "b"."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, '{"text": "a", "text": "b"}',
                                              '{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}'])
    manifest = reg.add("d", path)
    assert manifest.state is DatasetState.FAILED
    assert [(e.line, e.type) for e in manifest.errors] == [(2, "duplicate_key"), (3, "duplicate_key")]
    assert 'duplicate key "text"' in manifest.errors[0].msg and 'duplicate key "role"' in manifest.errors[1].msg
