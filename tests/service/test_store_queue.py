"""`Store.queue_positions` on SQLite and PostgreSQL: requested jobs ahead in the claim order, one query."""

from __future__ import annotations

from felix_train.jobs import JobStatus


def test_queue_positions_follow_the_claim_order_over_every_user(store):
    a, _ = store.create_user(name="a")
    b, _ = store.create_user(name="b")
    jobs = [store.create_job(owner_id=owner.id, name=f"j{i}", spec={}) for i, owner in enumerate((a, b, a, b))]
    ids = [j.id for j in jobs]
    assert store.queue_positions(job_ids=ids) == {ids[0]: 0, ids[1]: 1, ids[2]: 2, ids[3]: 3}
    claimed = store.claim_job(worker_id="w")
    assert claimed.id == ids[0]
    assert store.queue_positions(job_ids=ids) == {ids[1]: 0, ids[2]: 1, ids[3]: 2}  # running: no position
    assert store.queue_positions(job_ids=[ids[3]]) == {ids[3]: 2} and store.queue_positions(job_ids=[]) == {}
    store.set_status(job_id=ids[1], status=JobStatus.CANCELLED)
    assert store.queue_positions(job_ids=ids) == {ids[2]: 0, ids[3]: 1}
