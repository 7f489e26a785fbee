"""The job store on SQLite and PostgreSQL: users, datasets, jobs, claiming, recovery, rate limits."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from felix_train.errors import JobNotFound
from felix_train.jobs import JobStatus
from felix_train.service.store import (
    Conflict,
    DatasetNotFound,
    Job,
    Store,
    User,
    hash_api_key,
    users_main,
    utcnow,
)


def test_api_keys_are_stored_hashed(store):
    user, key = store.create_user(name="alice")
    assert key.startswith("felix_") and len(key) > 40
    with store.reading() as s:
        stored = s.get(User, user.id).key_hash
    assert stored == hash_api_key(key) and key not in stored
    assert store.user_by_api_key(api_key=key).id == user.id
    assert store.user_by_api_key(api_key=key + "x") is None
    with pytest.raises(Conflict, match="exists"):
        store.create_user(name="alice")
    with pytest.raises(ValueError, match="user name"):
        store.create_user(name="../etc")
    new_key = store.rotate_key(name="alice")
    assert store.user_by_api_key(api_key=key) is None
    assert store.user_by_api_key(api_key=new_key).id == user.id


def test_users_cli_prints_the_key_once(db_url, felix_home, capsys):
    assert users_main(["--database-url", db_url, "add", "bob"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("felix_") and "shown only now" in out.err
    store = Store(db_url, home=felix_home)
    try:
        assert store.user_by_api_key(api_key=key).name == "bob"
    finally:
        store.close()
    assert users_main(["--database-url", db_url, "add", "bob"]) == 1
    assert users_main(["--database-url", db_url, "list"]) == 0
    assert "bob" in capsys.readouterr().out


def test_job_round_trip_and_owner_scoping(store):
    a, _ = store.create_user(name="a")
    b, _ = store.create_user(name="b")
    spec = {"base_model": "felix/tiny-gliner2", "datasets": [{"name": "x"}], "engine": {"max_steps": 3}}
    job = store.create_job(owner_id=a.id, name="first", spec=spec, project_id="p1")
    got = store.get_job(job_id=job.id, owner_id=a.id)
    assert got.spec == spec and got.status is JobStatus.REQUESTED and got.project_id == "p1"
    assert got.created_at.tzinfo is not None
    with pytest.raises(JobNotFound):
        store.get_job(job_id=job.id, owner_id=b.id)
    with pytest.raises(JobNotFound):
        store.get_job(job_id="../../etc/passwd", owner_id=a.id)
    with pytest.raises(JobNotFound):
        store.delete_job(job_id=job.id, owner_id=b.id)


def test_list_jobs_filters_and_pages(store):
    a, _ = store.create_user(name="a")
    b, _ = store.create_user(name="b")
    ids = [store.create_job(owner_id=a.id, name=f"j{i}", spec={}, project_id="p" if i % 2 else None).id
           for i in range(5)]
    store.create_job(owner_id=b.id, name="other", spec={})
    store.set_status(job_id=ids[0], status=JobStatus.COMPLETE)
    rows, count = store.list_jobs(owner_id=a.id)
    assert count == 5 and [r.id for r in rows] == ids[::-1]  # newest first
    rows, count = store.list_jobs(owner_id=a.id, limit=2, offset=1)
    assert count == 5 and [r.id for r in rows] == ids[::-1][1:3]
    assert store.list_jobs(owner_id=a.id, status=JobStatus.COMPLETE)[1] == 1
    assert store.list_jobs(owner_id=a.id, project_id="p")[1] == 2
    assert store.list_jobs(owner_id=a.id, status=JobStatus.COMPLETE, project_id="p")[1] == 0


def test_stop_and_delete_respect_state(store):
    a, _ = store.create_user(name="a")
    job = store.create_job(owner_id=a.id, name="j", spec={})
    with pytest.raises(Conflict, match="only a `running` job"):
        store.request_stop(job_id=job.id, owner_id=a.id)
    claimed = store.claim_job(worker_id="w1")
    assert claimed.id == job.id
    assert store.request_stop(job_id=job.id, owner_id=a.id).stop_requested is True
    assert store.heartbeat(worker_id="w1", job_ids=[job.id]) == {job.id: True}
    with pytest.raises(Conflict, match="stop it first"):
        store.delete_job(job_id=job.id, owner_id=a.id)
    assert store.finish_job(job_id=job.id, worker_id="w1", status=JobStatus.CANCELLED)
    done = store.get_job(job_id=job.id)
    assert done.status is JobStatus.CANCELLED and done.stop_requested is False and done.finished_at
    store.delete_job(job_id=job.id, owner_id=a.id)
    with pytest.raises(JobNotFound):
        store.get_job(job_id=job.id)


def test_claim_is_exclusive_under_contention(store, db_url, felix_home):
    """8 threads with their own engines claim 40 jobs: each job is claimed exactly once."""
    a, _ = store.create_user(name="a")
    ids = {store.create_job(owner_id=a.id, name=f"j{i}", spec={"i": i}).id for i in range(40)}
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors = []

    def claimer(n: int) -> None:
        own = Store(db_url, home=felix_home, create=False)
        try:
            while (job := own.claim_job(worker_id=f"w{n}")) is not None:
                with lock:
                    claimed.append((job.id, f"w{n}"))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            own.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(j for j, _ in claimed) == sorted(ids)
    rows, _ = store.list_jobs(owner_id=a.id)
    assert all(r.status is JobStatus.RUNNING and r.attempts == 1 for r in rows)
    assert {r.worker_id for r in rows} == {w for _, w in claimed}


def test_claim_takes_the_oldest_first(store):
    a, _ = store.create_user(name="a")
    first = store.create_job(owner_id=a.id, name="1", spec={})
    store.create_job(owner_id=a.id, name="2", spec={})
    assert store.claim_job(worker_id="w").id == first.id


def test_finish_and_progress_need_ownership(store):
    a, _ = store.create_user(name="a")
    job = store.create_job(owner_id=a.id, name="j", spec={})
    store.claim_job(worker_id="w1")
    assert store.update_progress(job_id=job.id, worker_id="w1", progress={"step": 3, "total_steps": 10})
    assert not store.update_progress(job_id=job.id, worker_id="w2", progress={"step": 9})
    assert not store.finish_job(job_id=job.id, worker_id="w2", status=JobStatus.COMPLETE)
    assert store.get_job(job_id=job.id).progress["step"] == 3
    assert store.finish_job(job_id=job.id, worker_id="w1", status=JobStatus.COMPLETE, metrics={"eval_f1": 0.9})
    done = store.get_job(job_id=job.id)
    assert done.status is JobStatus.COMPLETE and done.metrics == {"eval_f1": 0.9} and done.worker_id == "w1"


def test_preempted_job_goes_back_to_the_queue(store):
    a, _ = store.create_user(name="a")
    job = store.create_job(owner_id=a.id, name="j", spec={})
    store.claim_job(worker_id="w1")
    assert store.finish_job(job_id=job.id, worker_id="w1", status=JobStatus.REQUESTED)
    again = store.claim_job(worker_id="w2")
    assert again.id == job.id and again.attempts == 2


def test_stale_jobs_are_requeued_cancelled_or_failed(store):
    a, _ = store.create_user(name="a")
    plain = store.create_job(owner_id=a.id, name="plain", spec={})
    stopping = store.create_job(owner_id=a.id, name="stopping", spec={})
    tired = store.create_job(owner_id=a.id, name="tired", spec={})
    for _ in range(3):
        store.claim_job(worker_id="dead")
    store.request_stop(job_id=stopping.id, owner_id=a.id)
    store.set_status(job_id=tired.id, status=JobStatus.RUNNING, attempts=3)
    assert store.requeue_stale(timeout_s=60) == {}  # heartbeats are fresh
    old = utcnow() - timedelta(seconds=120)
    with store.writing() as s:
        s.execute(Job.__table__.update().values(heartbeat_at=old))
    out = store.requeue_stale(timeout_s=60, max_attempts=3)
    assert out == {plain.id: JobStatus.REQUESTED, stopping.id: JobStatus.CANCELLED, tired.id: JobStatus.FAILED}
    assert store.get_job(job_id=plain.id).worker_id is None
    assert "giving up after 3 attempts" in store.get_job(job_id=tired.id).error["message"]
    assert store.get_job(job_id=tired.id).error["code"] == "worker_lost"
    # the dead worker's late report is refused
    assert not store.finish_job(job_id=plain.id, worker_id="dead", status=JobStatus.COMPLETE)


def test_datasets_per_user(store):
    a, _ = store.create_user(name="a")
    b, _ = store.create_user(name="b")
    store.create_dataset(owner_id=a.id, name="ner", state="processing", manifest=None)
    store.create_dataset(owner_id=b.id, name="ner", state="ready", manifest={"num_records": 3})
    with pytest.raises(Conflict):
        store.create_dataset(owner_id=a.id, name="ner", state="processing", manifest=None)
    store.update_dataset(owner_id=a.id, name="ner", state="failed", manifest={"errors": [{"line": 2}]})
    assert store.get_dataset(owner_id=a.id, name="ner").state == "failed"
    assert store.get_dataset(owner_id=b.id, name="ner").manifest == {"num_records": 3}
    assert [d.name for d in store.list_datasets(owner_id=a.id)] == ["ner"]
    store.delete_dataset(owner_id=a.id, name="ner")
    with pytest.raises(DatasetNotFound):
        store.get_dataset(owner_id=a.id, name="ner")
    assert store.get_dataset(owner_id=b.id, name="ner")


def test_rate_limit_sliding_window(store):
    a, _ = store.create_user(name="a")
    b, _ = store.create_user(name="b")
    t0 = 1000.0
    for i in range(3):
        assert store.hit_rate_limit(user_id=a.id, key="create", limit=3, window_s=60, now=t0 + i) is None
    retry = store.hit_rate_limit(user_id=a.id, key="create", limit=3, window_s=60, now=t0 + 10)
    assert retry == pytest.approx(50.0)
    assert store.hit_rate_limit(user_id=b.id, key="create", limit=3, window_s=60, now=t0 + 10) is None
    assert store.hit_rate_limit(user_id=a.id, key="create", limit=3, window_s=60, now=t0 + 60.5) is None


def test_sqlite_uses_wal(felix_home):
    store = Store(home=felix_home)  # the embedded default: $FELIX_HOME/felix.db
    try:
        assert store.url.endswith(str(felix_home / "felix.db"))
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def test_postgres_claims_with_skip_locked(store):
    """On PostgreSQL a row locked by one claimer is skipped by the next, not waited for."""
    if store.is_sqlite:
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite claims with one conditional UPDATE")
    a, _ = store.create_user(name="a")
    first = store.create_job(owner_id=a.id, name="1", spec={})
    second = store.create_job(owner_id=a.id, name="2", spec={})
    with store.engine.connect() as conn, conn.begin():
        conn.execute(text("SELECT id FROM jobs WHERE id = :i FOR UPDATE"), {"i": first.id})
        started = time.monotonic()
        job = store.claim_job(worker_id="w")
        assert job.id == second.id and time.monotonic() - started < 5


def test_deploying_a_deployed_job_names_its_endpoints(store):
    """The Conflict's hint names this job's predict and undeploy endpoints (not a literal `{job_id}`)."""
    a, _ = store.create_user(name="a")
    job = store.create_job(owner_id=a.id, name="j", spec={})
    store.set_status(job_id=job.id, status=JobStatus.DEPLOYED, deploy_requested=True)
    with pytest.raises(Conflict, match="already `deployed`") as err:
        store.request_deploy(job_id=job.id, owner_id=a.id)
    message = str(err.value)
    assert f"/felix/trained-models/{job.id}/predict" in message
    assert f"/felix/training-jobs/{job.id}/undeploy" in message and "{job_id}" not in message


def test_store_job_ids_have_the_one_format(store):
    from felix_train.jobs import JOB_ID_PATTERN, new_job_id
    from felix_train.service.store import new_job_id as store_new_job_id

    assert store_new_job_id is new_job_id
    a, _ = store.create_user(name="a")
    job = store.create_job(owner_id=a.id, name="j", spec={})
    assert re.match(JOB_ID_PATTERN, job.id) and job.id.startswith("job-") and len(job.id) == 36


def test_sqlite_database_is_private(felix_home):
    """The database holds key hashes and every spec: created 0600, and an existing 0644 one of ours narrowed."""
    import os
    import stat

    db = felix_home / "felix.db"
    store = Store(home=felix_home)
    try:
        store.create_user(name="alice")  # writes: the -wal and -shm files exist now
        for path in (db, db.with_name("felix.db-wal"), db.with_name("felix.db-shm")):
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        store.close()
    os.chmod(db, 0o644)  # made by an older felix_train
    store = Store(home=felix_home)
    try:
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert store.list_users()[0].name == "alice"  # the same database, rows kept
    finally:
        store.close()
