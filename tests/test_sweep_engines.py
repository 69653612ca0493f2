"""The issue's bars for sweep engines: one 60-row spec on one process, on 2 accelerate ranks (gloo, CPU)
and on a 2-actor local Ray cluster gives the same PNG bytes and scores per row id; a rank killed with
SIGKILL mid-sweep and a rerun leave every row exactly once.

The Ray cluster is started once for this module with `ray start --head --block` on loopback and
stopped by signalling that one process (it takes down what it started).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from animegen_utils.sweep import expand, load_results, run
from animegen_utils.sweep.store import done_parts

# The test cluster is on loopback only: Ray's one-machine mode keeps 127.0.0.1 (instead of the machine's
# network address) and, with no other machine to reach it, needs no auth token.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SPEC = """\
name: engines-60
axes:
  emotion: [happy, sad, angry, surprised, neutral]
  style: [casual, formal, school_uniform]
  seed: {start: 0, count: 4}
fixed: {steps: 2, guidance: 7.5}
scorers: [probe]
batch_size: 4
threads: 1
"""
SCORES = ["probe_emotion", "probe_emotion_ok", "probe_style", "probe_style_ok", "probe_hair_color"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "sweep.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory) -> dict[str, dict]:
    """The one-process run: row id -> its table row and PNG bytes."""
    out = tmp_path_factory.mktemp("one-process")
    summary = run(spec_file, out, engine="local", progress=False)
    assert summary.drawn == 60
    return _by_id(out)


def _by_id(out: Path) -> dict[str, dict]:
    rows = load_results(out).to_pylist()
    return {r["id"]: {**r, "png": (out / r["file"]).read_bytes()} for r in rows}


def _assert_same_as(reference: dict[str, dict], out: Path) -> None:
    got = _by_id(out)
    assert sorted(got) == sorted(reference) == sorted(r.id for r in expand(reference_spec()))
    differing = [i for i in reference if got[i]["png"] != reference[i]["png"]]
    assert not differing, f"{len(differing)} of 60 PNGs differ from the one-process run"
    for key in SCORES:
        assert [got[i][key] for i in sorted(got)] == [reference[i][key] for i in sorted(reference)], key
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.png" for i in reference)


def reference_spec() -> dict:
    import yaml

    return yaml.safe_load(SPEC)


def _accelerate(spec_file: Path, out: Path, token: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_TEST_TOKEN": token}
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "animegen_utils.sweep", "run", str(spec_file), "--out", str(out), "--no-progress"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rank_pid(token: str, rank: int) -> int | None:
    """The pid of the sweep process with this RANK started by this test (marked by its token)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if (f"SWEEP_TEST_TOKEN={token}".encode() in environ and f"RANK={rank}".encode() in environ
                and b"animegen_utils.sweep" in cmdline and b"accelerate" not in cmdline.split(b"\0")[0]):
            return int(entry)
    return None


def test_a_killed_accelerate_rank_and_a_rerun_give_every_row_once_with_the_one_process_bytes(
        spec_file, reference, tmp_path):
    out = tmp_path / "accelerate"
    token = uuid.uuid4().hex
    launch = _accelerate(spec_file, out, token, _free_port())
    try:
        deadline = time.time() + 240
        while not done_parts(out):  # the first batch is written: the sweep is under way
            assert launch.poll() is None and time.time() < deadline, launch.communicate()
            time.sleep(0.02)
        victim = _rank_pid(token, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode != 0  # the launcher reports the dead rank (and stops the other)
    assert 1 <= len(done_parts(out)) < 15, "the kill did not land mid-sweep"

    rerun = _accelerate(spec_file, out, token, _free_port())
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert "already done" in stdout and "(accelerate, 2 worker(s)" in stdout
    _assert_same_as(reference, out)
    assert len(done_parts(out)) == 15
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    workers = {r["worker"] for r in load_results(out).to_pylist()}
    assert workers == {"rank0", "rank1"}  # both ranks drew rows


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """A local Ray cluster on loopback: 2 CPUs, no dashboard, a 200 MB object store.

    Started once more if the first start fails: on a saturated 2-core machine Ray's raylet can
    miss its own start-up deadlines (seen at load 10+, never on a quiet machine).
    """
    pytest.importorskip("ray")
    folder = tmp_path_factory.mktemp("ray")
    for attempt in (1, 2):
        port, log = _free_port(), folder / f"head{attempt}.log"
        head = _start_head(port, log)
        if head.poll() is None:
            break
        assert attempt == 1, log.read_text()[-3000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop_head(head)


def _start_head(port: int, log: Path) -> subprocess.Popen:
    """`ray start --head --block`, returned once the GCS and the raylet are up (or it has stopped)."""
    with open(log, "w") as f:
        head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                                 "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
                                 "--include-dashboard=false", "--object-store-memory=200000000",
                                 "--disable-usage-stats"], stdout=f, stderr=subprocess.STDOUT)
    deadline = time.time() + 600  # ~20 s on a quiet 2-core machine; minutes when it is busy
    while "Ray runtime started" not in log.read_text():
        if head.poll() is not None or time.time() > deadline:
            _stop_head(head)
            break
        time.sleep(0.2)
    return head


def _stop_head(head: subprocess.Popen) -> None:
    started = _descendants(head.pid)
    head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started...
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    for pid in started:  # ...unless one of them died first: then whatever is left, by its pid
        with contextlib.suppress(ProcessLookupError):  # already stopped
            os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_two_actor_ray_cluster_by_address_gives_the_one_process_bytes(spec_file, reference, ray_address,
                                                                      tmp_path):
    out = tmp_path / "ray"
    summary = run(spec_file, out, engine="ray", address=ray_address, workers=2, progress=False)
    assert (summary.engine, summary.workers, summary.drawn) == ("ray", 2, 60)
    _assert_same_as(reference, out)
    assert {r["worker"] for r in load_results(out).to_pylist()} == {"ray0", "ray1"}
    again = run(spec_file, out, engine="ray", address=ray_address, progress=False)
    assert (again.drawn, again.done_before) == (0, 60)
