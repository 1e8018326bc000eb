"""Faults around Dask: a peer that is not a scheduler, a cluster without workers, a worker killed
mid-task.  Each ends in one clear line within its timeout, or in the exact result."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sdeeos
from sdeeos import SelfStabilization
from sdeeos.sweeps import NoWorkersError, SchedulerUnreachableError, sweep

distributed = pytest.importorskip("distributed")

GRID = {"eta": [0.01, 0.02], "sigma": [1.0, 5.0]}
SETTINGS = dict(params={"alpha": 1.0, "beta": 100.0}, n_traj=8, n_steps=256, seed=4, progress=False)
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


class _FakePeer:
    """A TCP server on 127.0.0.1 that is not a Dask scheduler: silent (like HTTP) or sending junk."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode == "junk":
                conn.sendall(b"\xff" * 64 + b"not a dask frame" * 64)
            # "http": waits for a request that never comes, like an HTTP server or the dashboard port

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("mode", ["http", "junk"])
def test_a_peer_that_is_not_a_scheduler_fails_fast_with_one_line(mode):
    peer = _FakePeer(mode)
    try:
        with pytest.raises(SchedulerUnreachableError) as info:
            sweep(SelfStabilization, GRID, scheduler=peer.address, connect_timeout=1.0, **SETTINGS)
    finally:
        peer.close()
    text = str(info.value)
    assert "\n" not in text and peer.address in text and "Dask scheduler" in text


def test_cli_with_a_non_dask_address_exits_2_without_hanging(tmp_path):
    peer = _FakePeer("http")
    study = tmp_path / "s.toml"
    study.write_text('kind = "sharpness_gap"\nname = "t"\n[model]\nalpha = 1.0\nbeta = 100.0\neta = 0.05\n'
                     '[batch_noise]\nn_data = 100\nsigma_1 = 4.0\n[grid]\nbatch_size = [5, 100]\n'
                     '[run]\nn_traj = 4\nduration_tau = 0.2\nburn_in_tau = 0.1\n')
    try:
        proc = subprocess.run([sys.executable, "-m", "sdeeos", "study", str(study), "--out", str(tmp_path / "o"),
                               "--scheduler", peer.address, "--no-progress"], env=ENV, capture_output=True,
                              text=True, timeout=120)
    finally:
        peer.close()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Dask scheduler" in proc.stderr and "Traceback" not in proc.stderr


def test_a_cluster_without_workers_stops_with_a_message():
    cluster = distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None)
    try:
        with pytest.raises(NoWorkersError, match="no workers for 1 s"):
            sweep(SelfStabilization, GRID, scheduler=cluster.scheduler_address, no_workers_timeout=1.0, **SETTINGS)
    finally:
        cluster.close()


def test_a_worker_killed_mid_task_does_not_change_the_result(tmp_path):
    grid = {"eta": [0.01, 0.02, 0.03], "sigma": [1.0, 5.0]}
    settings = dict(SETTINGS, n_traj=32, n_steps=20000)
    reference = sweep(SelfStabilization, grid, scheduler="serial", **settings)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env={"NUMBA_NUM_THREADS": "1"})
    client = distributed.Client(cluster, set_as_default=False)
    try:
        pids = list(client.run(os.getpid).values())
        store = tmp_path / "w.zarr"
        killer = threading.Timer(1.0, lambda: os.kill(pids[0], signal.SIGKILL))
        killer.start()
        ds = sweep(SelfStabilization, grid, scheduler=client, store=store, **settings)
        killer.join()
    finally:
        client.close()
        cluster.close()
    for name in reference.data_vars:
        if name != "wall_time_s":
            np.testing.assert_array_equal(reference[name].values, ds[name].values, err_msg=name)


def test_the_scheduler_dying_mid_run_is_one_line():
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env={"NUMBA_NUM_THREADS": "1"})
    address = cluster.scheduler_address
    grid = {"eta": [0.01, 0.02, 0.03], "sigma": [1.0, 3.0, 5.0]}
    settings = dict(SETTINGS, n_traj=64, n_steps=2_000_000)  # ~1 s per point: still running at the kill
    killer = threading.Timer(3.0, cluster.close)
    killer.start()
    try:
        with pytest.raises(SchedulerUnreachableError) as info:
            sweep(SelfStabilization, grid, scheduler=address, **settings)
    finally:
        killer.join()
        cluster.close()
    text = str(info.value)
    assert "\n" not in text and "lost the" in text and "re-run to resume" in text


# ------------------------------------------------------------------ sharded simulate: scripts, workers, Ctrl-C
ROOT = Path(__file__).resolve().parents[2]
PLAIN_SCRIPT = textwrap.dedent("""
    # a plain script: no `if __name__ == "__main__":` guard, and the dashboard's default port taken
    import socket
    port = socket.socket()
    port.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        port.bind(("127.0.0.1", 8787)); port.listen(1)
    except OSError:
        pass  # already taken: the case to test
    import sdeeos
    from sdeeos.sweeps import sweep
    model = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    ds = sdeeos.simulate(model, n_traj=400, n_steps=256, n_shards=2)
    print("simulate", ds.attrs["n_shards"], repr(ds.sharpness_mean.item()))
    sw = sweep(sdeeos.SelfStabilization, {"eta": [0.01, 0.02]}, params={"alpha": 1.0, "beta": 100.0, "sigma": 5.0},
               n_traj=8, n_steps=256)
    print("sweep", repr(float(sw.sharpness_mean[0])))
""")


def test_a_plain_script_without_main_guard_runs_shards_and_sweeps_quietly(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Port 8787" not in proc.stderr and "Nanny" not in proc.stderr, proc.stderr
    model = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    reference = sdeeos.simulate(model, n_traj=400, n_steps=256, progress=False)
    assert proc.stdout.splitlines()[0] == f"simulate 2 {reference.sharpness_mean.item()!r}"
    point = sdeeos.simulate(SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=5.0), n_traj=8, n_steps=256,
                            progress=False)
    assert proc.stdout.splitlines()[1] == f"sweep {point.sharpness_mean.item()!r}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _simulate_cmd(*extra):
    return [sys.executable, "-m", "sdeeos", "simulate", "self-stabilization", "--eta", "0.01", "--alpha", "1",
            "--beta", "100", "--sigma", "10", "--no-progress", *extra]


def test_every_worker_killed_mid_run_ends_in_one_line_within_the_timeout(tmp_path):
    """Two ``dask worker`` processes SIGKILLed a few seconds in, the scheduler up: the client ends
    within no_workers_timeout (3 s) + one poll, in one line, instead of waiting forever."""
    dask_cli = Path(sys.executable).with_name("dask")
    if not dask_cli.exists():
        pytest.skip("the dask command-line tool is not installed next to this Python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**ENV, "PYTHONPATH": str(ROOT) + os.pathsep + ENV["PYTHONPATH"]}
    quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        workers = [subprocess.Popen([str(dask_cli), "worker", address, "--nthreads", "1", "--no-nanny",
                                     "--no-dashboard"], **quiet) for _ in range(2)]
        procs += workers
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        ckpt = tmp_path / "run.ckpt"
        run = subprocess.Popen(_simulate_cmd("--n-traj", "4000", "--steps", "20000000", "--scheduler", address,
                                             "--n-shards", "4", "--no-workers-timeout", "3", "--checkpoint",
                                             str(ckpt)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        procs.append(run)
        deadline = time.monotonic() + 120
        while not (tmp_path / "run.ckpt.shards").exists():  # the client is connected and submitting
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read() if run.poll() else "slow"
            time.sleep(0.1)
        time.sleep(2.0)
        for w in workers:
            w.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, err = run.communicate(timeout=60)  # a hang fails here
        took = time.monotonic() - killed
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
    assert run.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "no workers for 3 s" in err and "run.ckpt.shards" in err and "re-run to resume" in err
    assert took < 3 + 1 + 15, took  # the stated bound (timeout + one poll), with slack for a loaded machine


def test_ctrl_c_of_a_sharded_run_is_one_line_and_resumes_exactly(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    args = ("--n-traj", "2000", "--steps", "40000", "--n-shards", "4", "--checkpoint", str(ckpt), "--json")
    # its own process group, and Ctrl-C sent to the whole group, as a terminal does (worker
    # processes of the run, if it had any, get it too)
    run = subprocess.Popen(_simulate_cmd(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any((tmp_path / "run.ckpt.shards").glob("*.npz")):  # one shard done, the next running
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip()]
    assert run.returncode == 130, err
    assert "Traceback" not in err and lines[-1] == "sdeeos: interrupted" and len(lines) <= 2, err
    kept = list((tmp_path / "run.ckpt.shards").glob("*.npz"))
    assert kept
    done = subprocess.run(_simulate_cmd(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reference = sdeeos.simulate(SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), n_traj=2000,
                                n_steps=40000, progress=False)
    got = json.loads(done.stdout)
    for name in ("sharpness_mean", "sharpness_mean_stderr", "x_sq_mean", "n_diverged"):
        assert got[name] == reference[name].item(), name


def test_the_scheduler_dying_mid_sharded_run_is_one_line_and_keeps_finished_shards(tmp_path):
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       env={"NUMBA_NUM_THREADS": "1"})
    address = cluster.scheduler_address
    killer = threading.Timer(4.0, cluster.close)
    killer.start()
    model = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    start = time.monotonic()
    try:
        with pytest.raises(SchedulerUnreachableError) as info:
            sdeeos.simulate(model, n_traj=64, n_steps=4_000_000, scheduler=address, n_shards=32,
                            checkpoint=tmp_path / "run.ckpt", progress=False)
    finally:
        killer.join()
        cluster.close()
    text = str(info.value)
    assert "\n" not in text and "lost the" in text and "re-run to resume" in text, text
    assert time.monotonic() - start < 4 + 30  # seconds, not the 60 s no-workers timeout or a hang


def test_ctrl_c_of_a_run_on_a_scheduler_is_one_line(tmp_path):
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       env={"NUMBA_NUM_THREADS": "1"})
    ckpt = tmp_path / "run.ckpt"
    try:
        run = subprocess.Popen(_simulate_cmd("--n-traj", "64", "--steps", "4000000", "--n-shards", "16",
                                             "--scheduler", cluster.scheduler_address, "--checkpoint", str(ckpt)),
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not any((tmp_path / "run.ckpt.shards").glob("*.npz")):
                assert run.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            os.killpg(run.pid, signal.SIGINT)
            _, err = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    finally:
        cluster.close()
    lines = [line for line in err.splitlines() if line.strip()]
    assert run.returncode == 130, err
    assert "Traceback" not in err and lines[-1] == "sdeeos: interrupted" and len(lines) <= 2, err
    assert list((tmp_path / "run.ckpt.shards").glob("*.npz"))


@pytest.mark.parametrize("per_trajectory", [True, False])
def test_one_worker_killed_mid_sharded_run_does_not_change_the_result(per_trajectory):
    model = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    kw = dict(n_traj=64, n_steps=400_000, seed=2, progress=False, per_trajectory=per_trajectory)
    reference = sdeeos.simulate(model, **kw)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       env={"NUMBA_NUM_THREADS": "1"})
    client = distributed.Client(cluster, set_as_default=False)
    try:
        pids = list(client.run(os.getpid).values())
        killer = threading.Timer(2.0, lambda: os.kill(pids[0], signal.SIGKILL))
        killer.start()
        ds = sdeeos.simulate(model, **kw, scheduler=client, n_shards=8)
        killer.join()
    finally:
        client.close()
        cluster.close()
    for name in reference.data_vars:
        np.testing.assert_array_equal(reference[name].values, ds[name].values, err_msg=name)
