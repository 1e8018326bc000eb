"""Faults around Dask: a peer that is not a scheduler, a cluster without workers, a worker killed
mid-task.  Each ends in one clear line within its timeout, or in the exact result."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

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
