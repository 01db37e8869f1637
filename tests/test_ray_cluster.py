"""``runtime infer --ray ADDRESS`` on a cluster started with Ray's own launcher on this machine
(``ray start --head``, 2 CPUs): the same outputs as ``runtime infer`` without Ray.

The cluster is started in a temporary folder of its own and always stopped: its processes (those
whose command line names that folder, and their descendants: the workers) are killed by process
id, as ``ray stop --force`` would kill them, without touching another Ray cluster on this machine
(``ray stop`` stops every one). The batch runs as a user runs it, in its own process
(``python -m runtime.cli``), which connects to the cluster by address. About 25 s on 2 cores, most of it
starting the cluster and its actors.
"""
from __future__ import annotations

import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runtime.cli import main

from tests.conftest import DATA, IN_CI, REPO, need
from tests.test_ray_infer import _assert_same, _rows

try:
    import ray.data  # noqa: F401
except ImportError:
    if IN_CI:
        raise
    pytest.skip("Ray Data is not installed (pip install 'mammo-cascade[ray]')", allow_module_level=True)

MIAS = ["mdb001", "mdb002", "mdb005"]  # real MIAS mammograms (1024x1024 PNG)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    """The ``ray`` launcher of this Python environment."""
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else shutil.which("ray") or "ray"


def _cluster_pids(folder: str) -> set:
    """Processes whose command line names ``folder`` (the head node's GCS, raylet, monitors) and
    their descendants (workers, which rename themselves 'ray::...')."""
    parent, roots = {}, set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if folder.encode() in cmd:
            roots.add(int(d.name))
    found, grew = set(roots), True
    while grew:
        kids = {p for p, pp in parent.items() if pp in found} - found
        found |= kids
        grew = bool(kids)
    return found - {os.getpid()}


def _stop_cluster(folder: str) -> None:
    """``ray stop --force`` for the cluster under ``folder`` only: SIGKILL to its processes."""
    for _ in range(3):  # a dying raylet may still start a worker
        pids = _cluster_pids(folder)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)


@pytest.fixture
def head_node():
    """-> 'HOST:PORT' of a Ray head node started with ``ray start --head`` (stopped afterwards)."""
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # this cluster only
    try:
        for _ in (1, 2):  # Ray waits 30 s for its raylet: a busy machine can miss that once
            start = subprocess.run([_ray_cli(), "start", "--head", "--port", str(port), "--num-cpus", "2",
                                    "--disable-usage-stats", "--include-dashboard", "false", "--temp-dir", tmp,
                                    "--object-store-memory", str(200 * 2**20)],
                                   cwd=tmp, env=env, capture_output=True, text=True, timeout=180)
            if start.returncode == 0:
                break
            _stop_cluster(tmp)
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(tmp)
        assert not _cluster_pids(tmp), "the test cluster's processes outlived the test"
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="stops the cluster's processes found through /proc (Linux)")
def test_infer_on_a_started_head_node_matches_local(head_node, tmp_path):
    src = need(DATA / "mias-mass" / "images")
    img = tmp_path / "img"
    img.mkdir()
    for n in MIAS:
        (img / f"{n}.png").symlink_to(need(src / f"{n}.png"))
    local, dist = tmp_path / "local", tmp_path / "ray"
    assert main(["infer", "--image-dir", str(img), "--out", str(local), "--no-progress"]) == 0
    # `ray start` enables token authentication (Ray >= 2.5x): a driver connecting by address
    # sends the token (~/.ray/auth_token, written by `ray start`) only in token mode
    env = dict({k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, RAY_AUTH_MODE="token")
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "infer", "--image-dir", str(img), "--out", str(dist),
                           "--no-progress", "--ray", head_node, "--ray-actors", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_same(local, dist)
    assert [r["status"] for r in _rows(dist)] == ["ok"] * len(MIAS)
    assert "ray actors: 2" in (dist / "batch.log").read_text()
