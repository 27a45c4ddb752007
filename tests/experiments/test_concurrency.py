"""Sweeps that share a store, and coordinators that die: claims with leases, workers that die with their parent."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from bnmft.cli import main
from bnmft.experiments.store import Store, cell_key
from bnmft.experiments.sweep import load_sweeps, run_sweep

from .test_sweeps import rows, write_config

SWEEP = [sys.executable, "-m", "bnmft.cli", "sweep"]


def test_claims_are_exclusive_expire_and_die_with_their_owner(tmp_path):
    store = Store(tmp_path / "c.db")
    me, other = f"{socket.gethostname()}:{os.getpid()}:a", "elsewhere:1:b"
    assert store.claim("k1", other, lease=60) == "claimed"
    assert store.claim("k1", me, lease=60) == "taken"  # a live claim of another coordinator
    assert store.claim("k2", other, lease=0.2) == "claimed"
    time.sleep(0.3)
    assert store.claim("k2", me, lease=60) == "claimed"  # expired: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert store.claim("k3", f"{socket.gethostname()}:{dead.pid}:c", lease=600) == "claimed"
    assert store.claim("k3", me, lease=60) == "claimed"  # its owner is a process of this host that is gone
    store.add("s", "k1", {"depth": 1}, {"test_accuracy": 0.5}, owner=other)
    assert store.claim("k1", me, lease=60) == "done"
    store.release(me)
    assert store.db.execute("SELECT count(*) FROM claims WHERE owner = ?", (me,)).fetchone()[0] == 0
    store.close()


def test_two_concurrent_sweeps_never_train_the_same_cell_twice(tmp_path):
    config = write_config(tmp_path / "s.toml", [1, 2, 3], seeds=(0, 1), train_subset=512, width=32)
    db = tmp_path / "shared.db"
    Store(db).close()  # the schema exists before both start
    cmd = [*SWEEP, str(config), "--store", str(db), "--workers", "1", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    summaries = [json.loads(out)[0] for out, _ in outs]
    # every cell trained exactly once across the two sweeps; the other sweep saw it done
    assert sum(s["ran"] for s in summaries) == 12, summaries
    assert all(s["ran"] + s["by_others"] + s["skipped"] == 12 for s in summaries), summaries
    assert len(rows(db)) == 12
    con = Store(db)
    assert con.db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0  # all claims released
    con.close()


def test_a_killed_coordinator_leaves_no_process_and_its_cells_are_taken_over(tmp_path):
    config = write_config(tmp_path / "s.toml", [1, 2, 3, 4, 5, 6], seeds=(0, 1), train_subset=1024, width=64)
    db = tmp_path / "k.db"
    cmd = [*SWEEP, str(config), "--store", str(db), "--workers", "2", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and (not db.exists() or len(rows(db)) < 2):
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the pool's workers are running"
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator only, not its process group
    proc.wait()
    before = rows(db)
    assert 2 <= len(before) < 24, "the kill must land mid-sweep"
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"orphans left behind: {[p.pid for p in alive]}"
    # the dead coordinator's claims are taken over at once (its pid is gone), the rest resumes
    assert main(["sweep", str(config), "--store", str(db), "--workers", "1", "--json"]) == 0
    after = rows(db)
    assert len(after) == 24 and len({k for k, _, _ in after}) == 24
    assert set(before) <= set(after)


def test_a_crashed_claimer_elsewhere_is_taken_over_when_its_lease_ends(tmp_path):
    config = write_config(tmp_path / "s.toml", [1], sizes=(8, 16))
    sweep = load_sweeps(config)[0]
    store = Store(tmp_path / "l.db")
    first = cell_key(sweep.cells()[0])
    assert store.claim(first, "another-host:4242:x", lease=1.5) == "claimed"  # a coordinator that died elsewhere
    start = time.time()
    summary = run_sweep(sweep, store, workers=1, progress=False, lease=4.0)
    assert summary["ran"] == 2 and len(store.results()) == 2
    assert time.time() - start >= 1.0  # it waited for the foreign lease to end
    store.close()


@pytest.mark.parametrize("lease", [0, -1, "soon", True])
def test_bad_lease(tmp_path, lease):
    store = Store(tmp_path / "b.db")
    with pytest.raises(ValueError, match="lease must be a positive number"):
        run_sweep(load_sweeps(write_config(tmp_path / "s.toml", [1]))[0], store, lease=lease)
    store.close()


#: run in a child subreaper (orphans are re-parented to it, so none escapes the count): start a sweep, kill -9 its
#: coordinator at MOMENT, then wait up to 10 s for its pipes to reach EOF and for every descendant to exit
KILL_HARNESS = r"""
import ctypes, json, os, select, signal, sqlite3, subprocess, sys, time
import psutil

moment, config, db = sys.argv[1:4]
ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
cmd = [sys.executable, "-m", "bnmft.cli", "sweep", config, "--store", db, "--workers", "2", "--json"]
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def workers():
    try:
        return [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
    except psutil.Error:  # a child exiting between the listing and its cmdline: look again
        return []


def stored():
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # no schema yet
        return 0
    finally:
        con.close()


deadline = time.time() + 120
if moment == "startup":  # the first worker exists: it is still importing, its parent-death signal not armed
    while not workers() and time.time() < deadline:
        time.sleep(0.005)
elif moment == "midrun":
    while stored() < 1 and time.time() < deadline:
        time.sleep(0.02)
else:
    time.sleep(float(moment))
seen, before = len(workers()), stored()
os.kill(proc.pid, signal.SIGKILL)
proc.wait()
killed, open_pipes, live = time.time(), [proc.stdout, proc.stderr], []
while time.time() < killed + 10:
    while True:  # reap the orphans that exited
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    for pipe in select.select(open_pipes, [], [], 0.1)[0]:
        if os.read(pipe.fileno(), 65536) == b"":
            open_pipes.remove(pipe)
    live = [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    if not live and not open_pipes:
        break
left = [" ".join(p.cmdline())[:100] for p in live if p.is_running()]
for p in live:
    p.kill()
print(json.dumps({"workers_seen": seen, "stored": before, "left": left, "eof": not open_pipes,
                  "seconds": time.time() - killed}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal and the subreaper are Linux's")
@pytest.mark.parametrize("moment", ["0.2", "1.0", "startup", "midrun"])
def test_kill_9_of_the_coordinator_at_any_moment_leaves_no_process(tmp_path, moment):
    config = write_config(tmp_path / "s.toml", [1, 2, 3, 4, 5, 6], seeds=(0, 1), train_subset=1024, width=64)
    db = tmp_path / "m.db"
    harness = [sys.executable, "-c", KILL_HARNESS, moment, str(config), str(db)]
    out = subprocess.run(harness, capture_output=True, text=True, timeout=240, check=True).stdout
    report = json.loads(out)
    assert report["left"] == [], f"orphans after kill -9 at {moment}: {report}"
    assert report["eof"], f"the caller's pipes stay open after kill -9 at {moment}: {report}"
    if moment == "startup":
        assert report["workers_seen"] >= 1 and report["stored"] == 0, report  # killed while workers were starting
    if moment == "midrun":
        assert 1 <= report["stored"] < 24, report  # killed with cells done and cells still to do
