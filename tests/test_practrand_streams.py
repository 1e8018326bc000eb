"""`scripts/practrand_streams.py` sends PractRand the words it says it sends, and refuses in one line
without PractRand (PractRand itself is not run here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from sdeeos import _rng

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "practrand_streams.py"
_spec = importlib.util.spec_from_file_location("practrand_streams", SCRIPT)
streams = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streams)


def _words(chunks, n):
    return np.frombuffer(next(chunks), dtype="<u4")[:n]


def test_philox_streams_are_the_blocks_of_the_scheme():
    seed = 2**40 + 7
    one = _words(streams._philox_chunks(seed, "trajectory"), 16)  # blocks 0..3 of trajectory 0
    want = np.concatenate([_rng.philox_block(seed, np.array([0]), b)[0] for b in range(4)])
    np.testing.assert_array_equal(one, want)
    across = _words(streams._philox_chunks(seed, "across"), 4 * (streams.ACROSS + 2))
    block0 = _rng.philox_block(seed, np.arange(streams.ACROSS), 0).ravel()
    block1 = _rng.philox_block(seed, np.arange(2), 1).ravel()
    np.testing.assert_array_equal(across, np.concatenate([block0, block1]))


def test_splitmix_streams_are_the_words_of_the_scheme():
    seed = 5
    keys, gammas = _rng.stream_keys(seed, streams.ACROSS)
    one = np.frombuffer(next(streams._splitmix_chunks(seed, "trajectory")), dtype="<u8")[:3]
    want = [_rng.mix64(keys[:1] + np.uint64(c + 1) * gammas[:1])[0] for c in range(3)]
    np.testing.assert_array_equal(one, want)
    across = np.frombuffer(next(streams._splitmix_chunks(seed, "across")), dtype="<u8")
    draw1 = _rng.mix64(keys + np.uint64(2) * gammas)  # draw c = 1 of every trajectory
    np.testing.assert_array_equal(across[streams.ACROSS: 2 * streams.ACROSS], draw1)
    # the words of the float64 uniforms of the scheme
    u = _rng.uniforms(keys, gammas, 1)
    np.testing.assert_array_equal(((draw1 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53, u)


def test_without_practrand_one_line_and_status_2(tmp_path):
    for args, needle in ((["--practrand", str(tmp_path / "RNG_test")], "RNG_test not found"),
                         (["--practrand", sys.executable, "--bytes", "3M"], "--bytes must be a power of 2")):
        out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
