"""Claims: several runners on one database measure and store each cell once."""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from harness import db
from tests.test_db import BACKENDS, _row, database_url

FP, VERSION = "fp", "git:abc"


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


def _claim(engine, cell: str, owner: str, lease_s: float = 60, **kw) -> bool:
    return db.claim(engine, cell, FP, owner, lease_s, **kw)


def _store(engine, cell: str, owner: str, status: str = "ok") -> int:
    return db.store(engine, [_row(cell, status, 1.0, run_id=owner)],
                    claim=(cell, FP, owner))


def test_a_live_claim_refuses_another_owner(url: str) -> None:
    engine = db.connect(url)
    assert _claim(engine, "c1", "a")
    assert not _claim(engine, "c1", "b")
    assert _claim(engine, "c1", "a")  # renewing one's own claim
    assert _claim(engine, "c2", "b")  # other cells are free
    assert {(c["cell_id"], c["owner"]) for c in db.claims(engine)} == {("c1", "a"), ("c2", "b")}
    with pytest.raises(ValueError, match="lease_s"):
        _claim(engine, "c3", "a", lease_s=0)


def test_an_expired_claim_is_taken_over(url: str) -> None:
    engine = db.connect(url)
    assert _claim(engine, "c1", "a", lease_s=0.2)
    time.sleep(0.3)
    assert _claim(engine, "c1", "b")
    assert not _claim(engine, "c1", "a")  # b's claim is live now
    assert [c["owner"] for c in db.claims(engine)] == ["b"]


def test_store_with_a_lost_claim_writes_nothing(url: str) -> None:
    engine = db.connect(url)
    assert _claim(engine, "c1", "a", lease_s=0.2)
    time.sleep(0.3)
    assert _claim(engine, "c1", "b")
    assert _store(engine, "c1", "a") == 0  # a's lease was taken over: no double write
    assert db.count(engine) == 0
    assert _store(engine, "c1", "b") == 1
    assert [r["run_id"] for r in db.results(engine)] == ["b"]
    assert db.claims(engine) == []  # stored and released in one transaction
    assert _store(engine, "c9", "a") == 0  # never claimed: nothing stored either


def test_store_refuses_rows_of_another_cell(url: str) -> None:
    engine = db.connect(url)
    assert _claim(engine, "c1", "a")
    with pytest.raises(ValueError, match="does not belong"):
        db.store(engine, [_row("c2", "ok", 1.0)], claim=("c1", FP, "a"))
    assert db.count(engine) == 0 and len(db.claims(engine)) == 1


def test_a_done_cell_is_not_claimable(url: str) -> None:
    engine = db.connect(url)
    db.store(engine, [_row("done", "ok", 1.0), _row("gone", "unavailable", None)])
    assert not _claim(engine, "done", "a")
    assert not _claim(engine, "gone", "a")
    assert db.claims(engine) == []
    assert _claim(engine, "done", "a", done_since=db.now())  # re-measuring (--rerun all)
    assert db.claim(engine, "done", "other-fp", "a", 60)  # other hardware


def test_failed_cells_are_retried_unless_they_failed_during_this_run(url: str) -> None:
    engine = db.connect(url)
    before = db.now() - timedelta(seconds=5)
    db.store(engine, [_row("c1", "failed", None)])
    assert _claim(engine, "c1", "a")  # a failed cell is claimable (it is retried) ...
    assert db.release(engine, "c1", FP, "a")
    # ... but not by a runner that started before the failure: another runner just tried it
    assert not _claim(engine, "c1", "b", skip_failed_since=before)
    assert _claim(engine, "c1", "b", skip_failed_since=db.now() + timedelta(seconds=5))


def test_release(url: str) -> None:
    engine = db.connect(url)
    assert _claim(engine, "c1", "a")
    assert not db.release(engine, "c1", FP, "b")  # not b's
    assert db.release(engine, "c1", FP, "a")
    assert not db.release(engine, "c1", FP, "a")
    assert _claim(engine, "c1", "b")


def test_a_finished_result_is_stored_once_even_without_claims(url: str) -> None:
    engine = db.connect(url)
    assert db.store(engine, [_row("c1", "ok", 1.0)]) == 1
    assert db.store(engine, [_row("c1", "ok", 2.0)]) == 0  # the unique index refuses it (same run)
    assert db.store(engine, [_row("c2", "failed", None)]) == 1
    assert db.store(engine, [_row("c2", "failed", None)]) == 1  # failures may repeat
    assert db.count(engine) == 3
    assert db.store(engine, [_row("c1", "ok", 3.0, run_id="r2")]) == 1  # another run may
    # a runner that claimed a cell some claim-less runner finished meanwhile stores nothing
    assert _claim(engine, "c3", "a")
    db.store(engine, [_row("c3", "ok", 1.0, run_id="rogue")])
    assert _store(engine, "c3", "a") == 0 and db.claims(engine) == []
    assert [r["run_id"] for r in db.results(engine) if r["cell_id"] == "c3"] == ["rogue"]


def test_heartbeat_keeps_claims_alive(url: str) -> None:
    engine = db.connect(url)
    db.start_run(engine, "a", "suite", VERSION, FP, 2)
    assert _claim(engine, "c1", "a", lease_s=0.2) and _claim(engine, "c2", "a", lease_s=0.2)
    assert db.heartbeat(engine, "a", 60) == 2
    time.sleep(0.3)
    assert not _claim(engine, "c1", "b")  # renewed for 60 s: still a's
    assert db.heartbeat(engine, "nobody", 60) == 0


def test_heartbeat_from_another_thread(url: str) -> None:
    engine = db.connect(url)
    db.start_run(engine, "a", "suite", VERSION, FP, 20)
    stop, errors = threading.Event(), []

    def beat() -> None:
        try:
            while not stop.is_set():
                db.heartbeat(engine, "a", 60)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        stored = sum(_store(engine, f"c{i}", "a") for i in range(20)
                     if _claim(engine, f"c{i}", "a"))
    finally:
        stop.set()
        thread.join()
    assert errors == [] and stored == 20 and db.count(engine) == 20


def _set_heartbeat(engine, run_id: str, seconds_ago: float) -> None:
    with engine.begin() as conn:
        conn.execute(update(db.Run).where(db.Run.run_id == run_id)
                     .values(heartbeat_at=db.now() - timedelta(seconds=seconds_ago)))


def test_abandon_stale_runs(url: str) -> None:
    engine = db.connect(url)
    for run in ("dead", "alive", "done"):
        db.start_run(engine, run, "suite", VERSION, FP, 3)
    db.finish_run(engine, "done", "finished")
    assert _claim(engine, "c1", "dead") and _claim(engine, "c2", "alive")
    _set_heartbeat(engine, "dead", 3600)
    _set_heartbeat(engine, "done", 3600)
    with engine.begin() as conn:  # a run from before schema 2: no heartbeat, started long ago
        conn.execute(text("INSERT INTO runs (run_id, suite, code_version, hardware_fingerprint,"
                          " started_at, status, n_cells) VALUES ('old', 's', 'v', 'fp', "
                          ":t, 'running', 1)"), {"t": db.now() - timedelta(days=2)})
    assert db.abandon_stale_runs(engine, 60) == 2
    status = {r["run_id"]: r["status"] for r in db.runs(engine)}
    assert status == {"dead": "abandoned", "alive": "running", "done": "finished",
                      "old": "abandoned"}
    assert all(r["finished_at"] is not None for r in db.runs(engine) if r["run_id"] != "alive")
    assert [c["owner"] for c in db.claims(engine)] == ["alive"]  # dead's claims freed
    assert db.abandon_stale_runs(engine, 60) == 0
    assert _claim(engine, "c1", "other")
    # the "dead" runner was only stalled: its heartbeat revives the run, not the lost claim
    assert db.heartbeat(engine, "dead", 60) == 0
    assert {r["run_id"]: r["status"] for r in db.runs(engine)}["dead"] == "running"
    assert _store(engine, "c1", "dead") == 0


def test_finish_run_drops_its_claims(url: str) -> None:
    engine = db.connect(url)
    db.start_run(engine, "a", "suite", VERSION, FP, 1)
    assert _claim(engine, "c1", "a")
    db.finish_run(engine, "a", "interrupted")
    assert db.claims(engine) == [] and db.runs(engine)[0]["status"] == "interrupted"
    with pytest.raises(ValueError, match="run status"):
        db.finish_run(engine, "a", "exploded")


N_RUNNERS, N_CELLS = 4, 40


def _runner(url: str, owner: str, barrier, queue) -> None:
    """One `archbench run`: connect to a fresh database, then claim, 'measure', store."""
    stored: list[str] = []
    try:
        barrier.wait(timeout=120)
        engine = db.connect(url)
        db.ensure_hardware(engine, FP, {"cpu": "test"})
        db.start_run(engine, owner, "suite", VERSION, FP, N_CELLS)
        db.abandon_stale_runs(engine, 600)
        for i in range(N_CELLS):
            cell = f"cell{i:02d}"
            if _claim(engine, cell, owner):
                time.sleep(0.005)  # the measurement
                if _store(engine, cell, owner):
                    stored.append(cell)
        db.finish_run(engine, owner, "finished")
        queue.put((owner, stored, None))
    except BaseException:
        queue.put((owner, stored, traceback.format_exc()))


def test_four_runners_on_a_fresh_database_store_each_cell_once(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(N_RUNNERS), ctx.Queue()
    procs = [ctx.Process(target=_runner, args=(url, f"run{i}", barrier, queue))
             for i in range(N_RUNNERS)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [err for _, _, err in reports if err]
    assert errors == [], "\n".join(errors)
    stored = Counter(cell for _, cells, _ in reports for cell in cells)
    assert len(stored) == N_CELLS and set(stored.values()) == {1}
    engine = db.connect(url)
    in_db = Counter(r["cell_id"] for r in db.results(engine))
    assert len(in_db) == N_CELLS and set(in_db.values()) == {1}
    assert db.claims(engine) == []
    assert sorted(r["status"] for r in db.runs(engine)) == ["finished"] * N_RUNNERS
    assert list(db.hardware(engine)) == [FP]
