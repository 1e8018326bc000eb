"""The Numba kernel's Philox block loop alone, in its two forms, interleaved in one process: the uint64
form (``philox4x32_nb``, every word held in a uint64, as the float64 kernel calls it) and the uint32
form (``philox4x32_w32_nb``, as the float32 kernel calls it), storing uint32 words.

    python benchmarks/bench_philox_lanes.py [--block 256] [--calls 4000] [--repeats 7]

Prints cycles per Philox call (four 32-bit words) for each form, from the CPU time of this thread
(best of ``--repeats``, the forms alternating) times the clock in /proc/cpuinfo, and the vector
registers the compiled loop uses.  Both forms must give the same words; the script checks it.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
from numba import njit

from sdeeos._rng import philox4x32_nb, philox4x32_w32_nb

M32 = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)


@njit
def loop_u64(gg, pk0, pk1, pw, n_calls):
    for b in range(n_calls):
        pb = np.uint64(b)
        for j in range(gg.size):
            w0, w1, w2, w3 = philox4x32_nb(pb & M32, pb >> S32, gg[j] & M32, gg[j] >> S32, pk0, pk1)
            pw[0, j] = w0
            pw[1, j] = w1
            pw[2, j] = w2
            pw[3, j] = w3


@njit
def loop_u32(gl, gh, qk0, qk1, pw, n_calls):
    for b in range(n_calls):
        pb = np.uint64(b)
        pb0, pb1 = np.uint32(pb & M32), np.uint32(pb >> S32)
        for j in range(gl.size):
            w0, w1, w2, w3 = philox4x32_w32_nb(pb0, pb1, gl[j], gh[j], qk0, qk1)
            pw[0, j] = w0
            pw[1, j] = w1
            pw[2, j] = w2
            pw[3, j] = w3


def clock_hz() -> float:
    with open("/proc/cpuinfo") as fh:
        return float(re.search(r"cpu MHz\s*:\s*([\d.]+)", fh.read()).group(1)) * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    seed = np.uint64(0x123456789ABCDEF1)
    gg = np.arange(5 * 2**32 - 100, 5 * 2**32 - 100 + a.block, dtype=np.uint64)  # index words cross 2**32
    gl, gh = (gg & M32).astype(np.uint32), (gg >> S32).astype(np.uint32)
    args = {"uint64 words (philox4x32_nb)": (loop_u64, (gg, seed & M32, seed >> S32)),
            "uint32 words (philox4x32_w32_nb)": (loop_u32, (gl, gh, np.uint32(seed & M32), np.uint32(seed >> S32)))}
    out = {name: np.empty((4, a.block), np.uint32) for name in args}
    for name, (f, x) in args.items():
        f(*x, out[name], 3)  # compile
    best = dict.fromkeys(args, float("inf"))
    for _ in range(a.repeats):
        for name, (f, x) in args.items():
            t = time.thread_time()
            f(*x, out[name], a.calls)
            best[name] = min(best[name], time.thread_time() - t)
    first, second = out.values()
    assert np.array_equal(first, second), "the two forms disagree"
    hz = clock_hz()
    for name, (f, _) in args.items():
        asm = "".join(f.inspect_asm().values())
        regs = "zmm (512-bit)" if "zmm" in asm else "ymm (256-bit)" if "ymm" in asm else "xmm"
        print(f"{name:34s} {best[name] * hz / (a.calls * a.block):5.2f} cycles per call, {regs}")
    t64, t32 = best.values()
    print(f"uint32 form: {t64 / t32:.2f}x the uint64 form (clock {hz / 1e9:.2f} GHz, block {a.block}, "
          f"{a.calls} calls, best of {a.repeats}, thread CPU time)")


if __name__ == "__main__":
    main()
