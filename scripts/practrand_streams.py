"""Feed the words behind sdeeos's normals to PractRand's ``RNG_test`` (not part of the test suite: slow,
and PractRand is not a dependency).

    python scripts/practrand_streams.py --rng philox --layout trajectory --bytes 4G [--seed 0]
        [--practrand /path/to/RNG_test]

Streams (32-bit words, little-endian, as ``RNG_test stdin32`` reads them):

* ``--layout trajectory``: one trajectory's words in draw order (what one trajectory consumes:
  Philox blocks 0, 1, 2, ... of trajectory 0; SplitMix64 words c = 0, 1, 2, ... as two 32-bit
  halves, low first);
* ``--layout across``: the words of trajectories 0 .. 4095 at one block (Philox) or draw (SplitMix64),
  then the next: neighbouring trajectories side by side, so that correlations between streams show.

PractRand reports every power of two of bytes it has read; "no anomalies" means every test passed.
Build it from its sources (PractRand 0.94/0.95: ``g++ -c src/*.cpp src/RNGs/*.cpp src/RNGs/other/*.cpp
-O3 -Iinclude -pthread``, ``ar rcs libPractRand.a *.o``, ``g++ -o RNG_test tools/RNG_test.cpp
libPractRand.a -O3 -Iinclude -pthread``) and put ``RNG_test`` on PATH or pass ``--practrand``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

from sdeeos import _rng

ACROSS = 4096  # trajectories side by side in the "across" layout
CHUNK = 1 << 20  # counters per generated chunk


def _philox_chunks(seed: int, layout: str):
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32)
    start = 0
    while True:
        ctr = np.zeros((CHUNK, 4), dtype=np.uint32)
        if layout == "trajectory":  # trajectory 0, blocks start .. start + CHUNK - 1
            b = np.arange(start, start + CHUNK, dtype=np.uint64)
            ctr[:, 0], ctr[:, 1] = b & 0xFFFFFFFF, b >> 32
        else:  # blocks in order, trajectories 0 .. ACROSS - 1 within each
            i = np.arange(start, start + CHUNK, dtype=np.uint64)
            b, t = i // ACROSS, i % ACROSS
            ctr[:, 0], ctr[:, 1], ctr[:, 2] = b & 0xFFFFFFFF, b >> 32, t
        yield _rng.philox4x32(ctr, key).tobytes()
        start += CHUNK


def _splitmix_chunks(seed: int, layout: str):
    n = 1 if layout == "trajectory" else ACROSS
    keys, gammas = _rng.stream_keys(seed, n)
    start = 0
    while True:
        if layout == "trajectory":  # word c of trajectory 0 for c = start .. start + CHUNK - 1
            c = np.arange(start, start + CHUNK, dtype=np.uint64)
            words = _rng.mix64(keys[0] + (c + np.uint64(1)) * gammas[0])
        else:  # draw c of trajectories 0 .. ACROSS - 1, then draw c + 1
            c = np.arange(start // ACROSS, (start + CHUNK) // ACROSS, dtype=np.uint64)
            words = _rng.mix64(keys[None, :] + (c[:, None] + np.uint64(1)) * gammas[None, :]).ravel()
        yield words.astype("<u8").tobytes()
        start += CHUNK


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rng", choices=_rng.RNGS, default="philox")
    parser.add_argument("--layout", choices=("trajectory", "across"), default="trajectory")
    parser.add_argument("--bytes", default="1G", help="how much PractRand reads (a power of 2; K, M, G, T)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--practrand", default=os.environ.get("PRACTRAND") or shutil.which("RNG_test"))
    args = parser.parse_args(argv)
    if not args.practrand or not os.access(args.practrand, os.X_OK):
        print("practrand: RNG_test not found: put it on PATH, set PRACTRAND or pass --practrand (build "
              "steps in this script's docstring)", file=sys.stderr)
        return 2
    limit = _size(args.bytes)
    if limit < 1 << 20 or limit & (limit - 1):
        print(f"practrand: --bytes must be a power of 2 of at least 1M, got {args.bytes}", file=sys.stderr)
        return 2
    seed = int(_rng.as_seed(args.seed))
    print(f"# {_rng.rng_scheme('float32', args.rng)} words, layout {args.layout}, seed {seed}, {args.bytes}",
          flush=True)
    cmd = [args.practrand, "stdin32", "-tlmax", f"{limit.bit_length() - 1}", "-multithreaded"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    chunks = _philox_chunks(seed, args.layout) if args.rng == "philox" else _splitmix_chunks(seed, args.layout)
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
    except BrokenPipeError:  # RNG_test stops reading at -tlmax
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
