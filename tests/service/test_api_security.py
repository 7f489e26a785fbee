"""The API's side of the security and error-object defects of issue 16, one regression test each:
download URLs revoked by a key rotation, the request-body limit (413), a private secret.key and
database (0600), job errors as `{code, message, param}` without internal paths, and a 422 that says
where an unparsable body breaks.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from felix_train.jobs import JobFolder, JobStatus
from felix_train.service.api import Settings, create_app, make_download_token
from felix_train.service.api.config import private_sqlite_database
from felix_train.service.api.schemas import ERROR_CODES, ErrorCode
from felix_train.service.api.tokens import load_secret

GLINER = "felix/tiny-gliner2"
SPEC = {"base_model": GLINER, "catalog_model": GLINER, "datasets": [{"name": "ner"}], "training_type": "lora",
        "training_algorithm": "sft", "engine": {}}


def make_app(home: Path, **settings):
    settings.setdefault("secret_key", "k")
    settings.setdefault("database_url", f"sqlite:///{home / 'felix.db'}")
    return create_app(Settings(home=home, **settings))


@pytest.fixture
def app(felix_home):
    return make_app(felix_home, max_body_bytes=64 * 1024, max_upload_bytes=256 * 1024)


@pytest.fixture
def store(app):
    return app.state.store


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def alice(store) -> dict:
    _, key = store.create_user(name="alice")
    return {"Authorization": f"Bearer {key}"}


def alice_id(store) -> int:
    return next(u.id for u in store.list_users() if u.name == "alice")


def job_in(store, home: Path, status: JobStatus, **fields) -> str:
    """One of alice's jobs recorded in `status` (with a model/ folder when `complete`)."""
    job = store.create_job(owner_id=alice_id(store), name="j", spec=SPEC)
    store.set_status(job_id=job.id, status=status, **fields)
    folder = JobFolder(job.id, home)
    folder.create()
    if status == JobStatus.COMPLETE:
        folder.model_dir.mkdir()
        (folder.model_dir / "weights.bin").write_bytes(b"w" * 16)
    return job.id


# -- 1. download URLs are bound to the API key they were issued under --------------------------------------


def test_rotating_the_api_key_revokes_download_urls(client, store, alice, felix_home, app):
    job_id = job_in(store, felix_home, JobStatus.COMPLETE)
    url = client.get(f"/felix/training-jobs/{job_id}/download", headers=alice).json()["url"]
    assert client.get(url).status_code == 200

    new_key = store.rotate_key(name="alice")  # `felix-train users rotate alice`
    r = client.get(url)
    assert r.status_code == 410, r.text
    assert "API key changed" in r.json()["detail"] and "fresh one" in r.json()["detail"]

    fresh = client.get(f"/felix/training-jobs/{job_id}/download",
                       headers={"Authorization": f"Bearer {new_key}"}).json()["url"]
    assert client.get(fresh).status_code == 200
    assert client.get(url).status_code == 410  # the old one stays revoked

    # a token signed with the right secret but bound to no key generation is refused too
    unbound = make_download_token(app.state.secret, job_id=job_id, user_id=alice_id(store), fmt="zip",
                                  expires_at=2**31)
    assert client.get(f"/felix/training-jobs/{job_id}/download/file", params={"token": unbound}).status_code == 410


# -- 2. the request-body limit -----------------------------------------------------------------------------


TEN_MB = b"x" * (10 * 1024 * 1024)


@pytest.mark.parametrize("path", ["/felix/training-jobs", "/felix/trained-models/{job}/predict"])
def test_a_body_over_the_limit_is_413_before_it_is_parsed(client, store, alice, felix_home, path):
    path = path.format(job=job_in(store, felix_home, JobStatus.DEPLOYED))
    headers = {**alice, "Content-Type": "application/json"}
    r = client.post(path, headers=headers, content=TEN_MB)  # not JSON: parsed, it would be a 422
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (f"the request body is {len(TEN_MB)} bytes; the limit is {64 * 1024} bytes "
                                  "(`FELIX_MAX_BODY_BYTES`)")
    # no Content-Length (chunked): the streamed bytes are counted
    chunks = (TEN_MB[i:i + 65536] for i in range(0, len(TEN_MB), 65536))
    r = client.post(path, headers=headers, content=chunks)
    assert r.status_code == 413 and "the limit is 65536 bytes" in r.json()["detail"], r.text
    # a body under the limit is read as before
    assert client.post(path, headers=headers, content=b"{").status_code == 422


def test_uploads_keep_their_own_limit(client, alice):
    big_but_allowed = b'{"input": "a", "output": {"entities": {}}}\n' * 2000  # ~88 KB: over max_body_bytes
    r = client.post("/felix/datasets", headers=alice, data={"name": "ner"},
                    files={"file": ("ner.jsonl", big_but_allowed, "application/jsonl")})
    assert r.status_code == 202, r.text
    r = client.post("/felix/datasets", headers=alice, data={"name": "big"},
                    files={"file": ("big.jsonl", b"x" * (1024 * 1024), "application/jsonl")})
    assert r.status_code == 413 and "FELIX_MAX_UPLOAD_BYTES" in r.json()["detail"], r.text


def test_body_limit_is_a_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("FELIX_MAX_BODY_BYTES", "2048")
    assert Settings(home=tmp_path).max_body_bytes == 2048
    monkeypatch.delenv("FELIX_MAX_BODY_BYTES")
    assert Settings(home=tmp_path).max_body_bytes == 1 << 20


# -- 3. secret.key and the database are private ------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_key_and_database_are_created_0600(tmp_path):
    home = tmp_path / "home"
    old = os.umask(0o022)
    try:
        app = create_app(Settings(home=home))  # no FELIX_SECRET_KEY, the default SQLite database
        with TestClient(app):
            pass
    finally:
        os.umask(old)
    assert mode(home / "secret.key") == 0o600
    assert mode(home / "felix.db") == 0o600
    for extra in (home / "felix.db-wal", home / "felix.db-shm"):
        assert not extra.exists() or mode(extra) == 0o600
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".secret")) == []  # no temporary left


def test_files_of_an_older_version_are_made_private(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.key").write_text("an-old-key\n")
    (home / "felix.db").touch()
    for name in ("secret.key", "felix.db"):
        (home / name).chmod(0o644)
    assert load_secret(Settings(home=home)) == b"an-old-key"
    assert private_sqlite_database(f"sqlite:///{home / 'felix.db'}") == home / "felix.db"
    assert mode(home / "secret.key") == 0o600 and mode(home / "felix.db") == 0o600
    assert private_sqlite_database("sqlite://") is None
    assert private_sqlite_database("postgresql+psycopg://u@h/db") is None


def test_processes_starting_together_share_one_secret(tmp_path):
    home = tmp_path / "home"
    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(load_secret(Settings(home=home)))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1 and len(got[0]) == 64


# -- 4. a job's error is {code, message, param} -------------------------------------------------------------


WHERE = "/usr/lib/python3/site-packages/numpy/random/_mt19937.pyx:182 in seed"


@pytest.mark.parametrize(("stored", "code", "param"), [
    ({"type": "SpecError", "errors": [{"loc": ["engine", "seed"], "msg": "too big", "type": "value_error"},
                                      {"loc": ["name"], "msg": "bad", "type": "value_error"}]},
     "spec_invalid", "engine.seed"),
    ({"type": "SpecError", "errors": [{"loc": ["datasets", 0, "name"], "msg": "gone", "type": "dataset_not_found"}]},
     "dataset_invalid", "datasets.0.name"),
    ({"type": "DatasetError", "errors": []}, "dataset_invalid", None),
    ({"type": "OutOfMemoryError"}, "out_of_memory", None),
    ({"type": "RunnerExited"}, "killed", None),
    ({"type": "WorkerLost"}, "preempted_too_often", None),
    ({"type": "RunnerExited", "code": "out_of_memory"}, "out_of_memory", None),  # a code recorded with the error
    ({"type": "ValueError"}, "internal", None),
    ({"type": "ValueError", "code": "not-a-code"}, "internal", None),
])
def test_a_failed_jobs_error_is_code_message_param(client, store, alice, felix_home, stored, code, param):
    error = {"message": "what went wrong", "where": WHERE, "errors": [], **stored}
    job_id = job_in(store, felix_home, JobStatus.FAILED, error=error)
    one = client.get(f"/felix/training-jobs/{job_id}", headers=alice)
    listed = client.get("/felix/training-jobs", headers=alice)
    assert one.json()["error"] == {"code": code, "message": "what went wrong", "param": param}
    assert listed.json()["data"][0]["error"] == one.json()["error"]
    for r in (one, listed):
        assert "_mt19937" not in r.text and "site-packages" not in r.text and '"where"' not in r.text


def test_an_old_status_json_error_without_a_code_gets_its_code_from_its_type(client, store, alice, felix_home):
    """An error written before codes existed (no `code`) is read, re-saved and recorded as the worker does: it
    stays without a code (not `internal`), and the API derives the stable code from its type."""
    job_id = job_in(store, felix_home, JobStatus.RUNNING)
    folder = JobFolder(job_id, felix_home)
    old = {"type": "DatasetError", "message": "dataset 'ner' is gone", "where": WHERE}
    folder.write_status({"id": job_id, "status": "failed", "error": old})
    folder.update_state(progress={"step": 3})  # an update re-saves the error as read
    state = folder.read_state()
    assert state.error.code is None and "code" not in folder.read_status()["error"]
    error = state.error.model_dump(mode="json")  # what the worker records in the store
    assert error["code"] is None
    store.set_status(job_id=job_id, status=JobStatus.FAILED, error=error)
    got = client.get(f"/felix/training-jobs/{job_id}", headers=alice).json()["error"]
    assert got == {"code": "dataset_invalid", "message": "dataset 'ner' is gone", "param": None}


def test_error_codes_are_documented(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == [c.value for c in ErrorCode]
    for c in ErrorCode:
        assert f"`{c.value}`" in schemas["ErrorCode"]["description"], c
    assert set(schemas["ErrorPublic"]["properties"]) == {"code", "message", "param"}
    assert set(ERROR_CODES.values()) <= set(ErrorCode)


# -- 5. an unparsable body: where it breaks -----------------------------------------------------------------


@pytest.mark.parametrize(("body", "line", "column", "what"), [
    (b'{\n  "base_model": "x",\n  "name" "y"\n}', 3, 10, "Expecting ':' delimiter"),
    ('{\n "name": "caf\xe9"}'.encode("latin-1"), 2, 14, "byte 0xe9 cannot be read as utf-8"),
])
@pytest.mark.parametrize("path", ["/felix/training-jobs", "/felix/trained-models/{job}/predict"])
def test_an_unparsable_body_says_where(client, store, alice, felix_home, path, body, line, column, what):
    path = path.format(job=job_in(store, felix_home, JobStatus.DEPLOYED))
    r = client.post(path, headers={**alice, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["type"] == "json_invalid" and item["loc"][0] == "body"
    assert (item["ctx"]["line"], item["ctx"]["column"]) == (line, column)
    assert what in item["msg"] and f"line {line}, column {column}" in item["msg"]


def test_a_body_nested_too_deeply_is_422(client, alice):
    r = client.post("/felix/training-jobs", headers={**alice, "Content-Type": "application/json"},
                    content=b"[" * 50_000)
    assert r.status_code == 422, r.text
    assert "nested too deeply" in r.json()["detail"][0]["msg"]
    assert "There was an error parsing the body" not in r.text
