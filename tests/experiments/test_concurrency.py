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
