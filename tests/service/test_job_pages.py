"""Pages of `GET /felix/training-jobs`: the cursor (`after` / `next_cursor`) and offsets, on SQLite and PostgreSQL.

A cursor page never repeats or skips a job while jobs are submitted, combines with the filters, shows
only the caller's jobs whatever cursor is sent, and a damaged one is a 422 naming `after`. The page
queries read one index range (SQLite's and PostgreSQL's plans).
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from felix_train.jobs import JobStatus
from felix_train.service.api import Settings, create_app
from felix_train.service.store import JobCursor, Store

SPEC = {"base_model": "felix/tiny-gliner2", "training_type": "lora", "training_algorithm": "ner",
        "engine": {"home": "/srv/felix", "dataset_owner": 1, "seed": 7}, "catalog_model": {"x": 1}}


@pytest.fixture
def api(store, felix_home):
    settings = Settings(home=felix_home, database_url=store.url, secret_key="s3cret")
    with TestClient(create_app(settings, store=store)) as client:
        yield client


def _user(store: Store, name: str) -> tuple[int, dict]:
    user, key = store.create_user(name=name)
    return user.id, {"Authorization": f"Bearer {key}"}


def _job(store: Store, owner: int, *, status: JobStatus = JobStatus.REQUESTED, project_id: str | None = None,
         created_at: datetime | None = None) -> str:
    job = store.create_job(owner_id=owner, name="j", spec=SPEC, project_id=project_id)
    fields = {"created_at": created_at} if created_at else {}
    if status is not JobStatus.REQUESTED or fields:
        store.set_status(job_id=job.id, status=status, **fields)
    return job.id


def _pages(api: TestClient, headers: dict, between=lambda: None, **params) -> tuple[list[str], list[dict]]:
    """Every id, following `next_cursor` from the first page; `between` runs after each page."""
    ids, answers, after = [], [], None
    while True:
        r = api.get("/felix/training-jobs", headers=headers, params={**params, **({"after": after} if after else {})})
        assert r.status_code == 200, r.text
        answers.append(r.json())
        ids += [j["id"] for j in r.json()["data"]]
        after = r.json()["next_cursor"]
        if after is None:
            return ids, answers
        between()
        assert len(answers) < 100, "the cursor does not advance"


def test_cursor_pages_give_every_job_once_while_jobs_are_submitted(store, api):
    alice, headers = _user(store, "alice")
    bob, _ = _user(store, "bob")
    for _ in range(18):
        _job(store, alice)
    tie = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)  # five jobs at the same instant: `id` orders them
    for _ in range(5):
        _job(store, alice, created_at=tie)
    before, count = store.list_jobs(owner_id=alice)
    assert count == 23

    def submit_more():
        _job(store, alice)
        _job(store, bob)

    ids, answers = _pages(api, headers, between=submit_more, limit=5)
    assert ids == [j.id for j in before]  # each once, newest first, none of those submitted meanwhile
    assert [len(a["data"]) for a in answers] == [5, 5, 5, 5, 3]
    assert answers[-1]["count"] == 23 + 4  # the count is of now, pages are of the position
    assert [j["id"] for j in answers[0]["data"]] == [j.id for j in before[:5]]
    # an offset, under the same submissions, shows a job twice: why the cursor exists
    first = api.get("/felix/training-jobs", headers=headers, params={"limit": 5}).json()["data"]
    submit_more()
    second = api.get("/felix/training-jobs", headers=headers, params={"limit": 5, "offset": 5}).json()["data"]
    assert first[-1]["id"] == second[0]["id"]


def test_the_last_page_has_no_cursor_and_the_answer_is_unchanged(store, api):
    alice, headers = _user(store, "alice")
    job = _job(store, alice, status=JobStatus.RUNNING, project_id="p")
    page = api.get("/felix/training-jobs", headers=headers).json()
    assert page["next_cursor"] is None and page["count"] == 1
    item = page["data"][0]
    assert item["id"] == job and item["status"] == "running" and "metrics" not in item
    assert item["configuration"]["engine"] == {"seed": 7} and "catalog_model" not in item["configuration"]
    assert item == api.get(f"/felix/training-jobs/{job}", headers=headers).json()
    assert SPEC["engine"]["home"] == "/srv/felix"  # the answer's copy, not the stored spec, lost the internals
    exact = api.get("/felix/training-jobs", headers=headers, params={"limit": 1}).json()
    assert exact["next_cursor"] is None  # a full last page says so too (the store read one row more)


def test_filters_combine_with_the_cursor(store, api):
    alice, headers = _user(store, "alice")
    for i in range(24):
        _job(store, alice, status=[JobStatus.FAILED, JobStatus.COMPLETE, JobStatus.RUNNING][i % 3],
             project_id=["a", "b", None][i % 4 % 3])
    for params in [{"status": "failed"}, {"project_id": "a"}, {"status": "complete", "project_id": "b"}]:
        rows, count = store.list_jobs(owner_id=alice, status=JobStatus(params["status"]) if "status" in params
                                      else None, project_id=params.get("project_id"))
        ids, answers = _pages(api, headers, limit=2, **params)
        assert ids == [j.id for j in rows] and 0 < count < 24 and answers[0]["count"] == count, params
    # a cursor is a position: a page from it with other filters is those filters' jobs after it
    pos = store.page_jobs(owner_id=alice, limit=6).next_cursor
    after = api.get("/felix/training-jobs", headers=headers, params={"after": pos.encode(), "status": "failed"})
    expected = [j.id for j in store.list_jobs(owner_id=alice, status=JobStatus.FAILED)[0]
                if (j.created_at, j.id) < (pos.created_at, pos.id)]
    assert [j["id"] for j in after.json()["data"]] == expected and expected


def test_a_cursor_shows_only_the_callers_jobs(store, api):
    alice, alice_h = _user(store, "alice")
    bob, bob_h = _user(store, "bob")
    for _ in range(6):
        _job(store, alice)
        _job(store, bob)
    alice_ids = {j.id for j in store.list_jobs(owner_id=alice)[0]}
    bob_ids = [j.id for j in store.list_jobs(owner_id=bob)[0]]
    cursor = api.get("/felix/training-jobs", headers=alice_h, params={"limit": 2}).json()["next_cursor"]
    seen = api.get("/felix/training-jobs", headers=bob_h, params={"after": cursor}).json()
    assert seen["data"] and not {j["id"] for j in seen["data"]} & alice_ids
    assert seen["count"] == 6  # bob's own count: nothing of alice's shows in it either
    # a cursor bob builds from alice's newest job, and every page bob follows from it
    forged = JobCursor.of(store.list_jobs(owner_id=alice, limit=1)[0][0]).encode()
    ids, _ = _pages(api, bob_h, limit=2)
    assert ids == bob_ids
    r = api.get("/felix/training-jobs", headers=bob_h, params={"after": forged})
    assert {j["id"] for j in r.json()["data"]} <= set(bob_ids)


def _cursor(raw: str) -> str:
    return "c1." + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("after", [
    "nonsense", "c1.", "c1.@@@", _cursor("no separator"), _cursor("2025-01-01T00:00:00+00:00|../etc"),
    _cursor("yesterday|job-1"), _cursor("2025-01-01T00:00:00|job-1"), "c1." + "A" * 300])
def test_a_damaged_cursor_is_a_422_naming_after(store, api, after):
    _, headers = _user(store, "alice")
    r = api.get("/felix/training-jobs", headers=headers, params={"after": after})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "after"]
    assert "Traceback" not in r.text


def test_after_and_offset_together_is_a_422_naming_offset(store, api):
    alice, headers = _user(store, "alice")
    _job(store, alice)
    good = JobCursor(created_at=datetime.now(timezone.utc) + timedelta(days=1), id="job-x").encode()
    assert api.get("/felix/training-jobs", headers=headers, params={"after": good}).json()["count"] == 1
    r = api.get("/felix/training-jobs", headers=headers, params={"after": good, "offset": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "offset"]
    assert "not both" in r.json()["detail"][0]["msg"]


def test_cursor_round_trips_and_the_schema_documents_it(api):
    cursor = JobCursor(created_at=datetime(2025, 1, 2, 10, 0, 0, 123456, tzinfo=timezone.utc), id="job-abc_1.x")
    assert JobCursor.decode(cursor.encode()) == cursor
    schema = api.get("/openapi.json").json()
    page = schema["components"]["schemas"]["TrainingJobsPublic"]["properties"]["next_cursor"]
    assert page["examples"] and "after" in page["description"]
    params = {p["name"] for p in schema["paths"]["/felix/training-jobs"]["get"]["parameters"]}
    assert {"after", "offset", "limit", "status", "project_id"} <= params


def test_offset_pages_and_light_rows_agree_with_cursor_pages(store):
    owner, _ = _user(store, "alice")
    for i in range(9):
        _job(store, owner, status=JobStatus.FAILED if i % 2 else JobStatus.COMPLETE, project_id="p")
    for kw in [{}, {"status": JobStatus.FAILED}, {"project_id": "p"}]:
        by_offset = [r.id for r in store.page_jobs(owner_id=owner, offset=2, limit=3, light=True, **kw).rows]
        cursor = store.page_jobs(owner_id=owner, limit=2, **kw).next_cursor
        by_cursor = [r.id for r in store.page_jobs(owner_id=owner, after=cursor, limit=3, **kw).rows]
        assert by_offset == by_cursor and by_offset, kw
    assert store.page_jobs(owner_id=owner, offset=50).rows == []


def _statements(store: Store, call) -> list[tuple[str, object]]:
    seen = []

    def grab(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        if "ORDER BY" in statement:  # the page and claim queries (not counts, nor reads by id)
            seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", grab)
    return seen


def test_page_queries_read_one_index_range(store):
    """SQLite and PostgreSQL: a cursor page and a claim read their index in order (no sort); an offset page
    skips rows in a covering index (PostgreSQL: index only), then reads only the page's rows."""
    owner, _ = _user(store, "alice")
    for i in range(5):
        _job(store, owner, status=JobStatus.FAILED if i % 2 else JobStatus.REQUESTED, project_id="p")
    cursor = store.page_jobs(owner_id=owner, limit=1).next_cursor
    cases = {
        "ix_jobs_owner_created_id": lambda: store.page_jobs(owner_id=owner, after=cursor, light=True),
        "ix_jobs_owner_status_created_id": lambda: store.page_jobs(owner_id=owner, after=cursor,
                                                                   status=JobStatus.FAILED),
        "ix_jobs_owner_project_created_id": lambda: store.page_jobs(owner_id=owner, after=cursor, project_id="p"),
        "ix_jobs_status_created_id": lambda: store.claim_job(worker_id="w"),
    }
    offset = _statements(store, lambda: store.page_jobs(owner_id=owner, offset=2, status=JobStatus.FAILED))
    with store.engine.connect() as conn:
        if not store.is_sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")  # a 5-row table: ask whether an index can serve it
        explain = "EXPLAIN QUERY PLAN " if store.is_sqlite else "EXPLAIN "
        for index, call in cases.items():
            (sql, params), = _statements(store, call)
            plan = " | ".join(str(r[-1] if store.is_sqlite else r[0]) for r in conn.exec_driver_sql(explain + sql, params))
            assert index in plan and "TEMP B-TREE" not in plan and "Sort" not in plan, (index, sql, plan)
        (sql, params), = offset
        plan = " | ".join(str(r[-1] if store.is_sqlite else r[0]) for r in conn.exec_driver_sql(explain + sql, params))
        covering = "COVERING INDEX ix_jobs_owner_status_created_id" if store.is_sqlite else \
            "Index Only Scan Backward using ix_jobs_owner_status_created_id"
        assert covering in plan, plan


def test_light_rows_are_the_jobs_and_a_resubmitted_id_shows_its_own_spec(store):
    from dataclasses import fields

    from felix_train.service.store import JobRow

    owner, _ = _user(store, "alice")
    for i in range(3):
        _job(store, owner, status=JobStatus.FAILED if i else JobStatus.COMPLETE)
    names = [f.name for f in fields(JobRow)]
    for _ in range(2):  # read, then from the spec cache
        light = store.page_jobs(owner_id=owner, light=True).rows
        full = store.page_jobs(owner_id=owner).rows
        assert [[getattr(r, n) for n in names] for r in light] == [[getattr(j, n) for n in names] for j in full]
    assert store.spec_cache.hits >= 3
    job = store.create_job(owner_id=owner, name="again", spec={**SPEC, "base_model": "first"}, job_id="job-same")
    assert store.page_jobs(owner_id=owner, light=True, limit=1).rows[0].spec["base_model"] == "first"
    store.delete_job(job_id=job.id, owner_id=owner)
    store.create_job(owner_id=owner, name="again", spec={**SPEC, "base_model": "second"}, job_id="job-same")
    assert store.page_jobs(owner_id=owner, light=True, limit=1).rows[0].spec["base_model"] == "second"
