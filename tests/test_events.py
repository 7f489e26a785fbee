"""The typed event list: ordered unique ids under concurrent writers, cut on resume, torn lines skipped."""

import multiprocessing as mp

from felix_train.events import EventType, append_event, cut_events, read_events


def _writer(root: str, n: int) -> None:
    for i in range(n):
        append_event(root, EventType.STEP_METRICS, {"i": i}, step=i)


def test_concurrent_writers_get_unique_ordered_ids(tmp_path):
    procs = [mp.get_context("fork").Process(target=_writer, args=(str(tmp_path), 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    ids = [e["id"] for e in read_events(tmp_path)]
    assert ids == list(range(1, 121))


def test_cut_keeps_stepless_events_and_never_reuses_ids(tmp_path):
    append_event(tmp_path, EventType.STATUS_CHANGED, {"status": "running"})
    for step in range(1, 6):
        append_event(tmp_path, EventType.STEP_METRICS, {"loss": 1 / step}, step=step)
    assert cut_events(tmp_path, 3) == 2
    events = read_events(tmp_path)
    assert [e.get("step") for e in events if e["type"] == "step_metrics"] == [1, 2, 3]
    assert events[0]["type"] == "status_changed"
    assert events[-1] == {**events[-1], "id": 6, "type": "resumed", "data": {"from_step": 3}}
    assert append_event(tmp_path, EventType.CHECKPOINT_SAVED, {"uuid": "u"}, step=4)["id"] == 7
    assert [e["id"] for e in read_events(tmp_path, after=4, limit=1)] == [6]
    assert [e["id"] for e in read_events(tmp_path, types={"checkpoint_saved"})] == [7]


def test_a_torn_last_line_is_not_served(tmp_path):
    append_event(tmp_path, EventType.STATUS_CHANGED, {"status": "running"})
    with open(tmp_path / "events.jsonl", "ab") as fh:
        fh.write(b'{"id": 2, "type": "warn')
    assert [e["id"] for e in read_events(tmp_path)] == [1]
    assert append_event(tmp_path, EventType.WARNING, {"code": "x"})["id"] == 2  # after a writer killed mid-line
    assert [e["id"] for e in read_events(tmp_path)] == [1, 2]
