"""Estimate, without a GPU, how many trajectory-steps per second an H100/H200 gives for the reduced
model (SGD) in each RNG scheme, from PTX instruction counts (NVRTC runs on the CPU).

    pip install nvidia-cuda-nvrtc-cu12   # or set SDEEOS_NVRTC to a libnvrtc.so
    python benchmarks/gpu_ptx_estimate.py

For each (dtype, rng) the generated RNG source is compiled (``-arch=compute_90 --fmad=false``, as the
CuPy engine does) into small probe kernels, whose PTX instructions are counted by class:

* ``words``: the integer hash per draw (SplitMix64: one ``mix64``; Philox: one call per 4 or 2 draws);
* ``central``: AS241's central branch from the word (85 % of draws);
* ``tail``: the whole normal function minus its central branch (both tail branches, taken by 15 %);
* ``step``: the reduced model's update and streamed sums (the advance kernel with the noise fixed).

The estimate charges each class to its H100 pipe: 32-bit integer ops and 32-bit IMAD at 64 per SM per
clock, 64-bit integer multiplies (``mul.lo.u64``: emulated, counted as 4 IMAD), FP32 at 128, FP64 at
64 per SM per clock (FP64 divide and sqrt are PTX instructions that ptxas expands into about 10 FMA
each; counted so), 132 SMs at 1.98 GHz, pipes not overlapping (a pessimistic sum; the optimistic
bound, pipes fully overlapping, is also printed).  Memory traffic is nil (state in registers) and
issue limits are ignored: these are estimates, not measurements.
"""

from __future__ import annotations

import re
from collections import Counter

from sdeeos import _rng
from sdeeos.engines._cuda_host import find_nvrtc, nvrtc_compile
from sdeeos.engines._cuda_template import _horner, rng_source
from sdeeos.engines._cupy import _NVRTC_OPTIONS

SMS, CLOCK = 132, 1.98e9
PER_CLOCK = {"int": 64, "fp32": 128, "fp64": 64}  # per SM per clock
EXPAND = {"mul64": 4, "div64": 10, "sqrt64": 10, "div32": 4, "sqrt32": 4}


def _probe(dtype: str, rng: str, part: str) -> str:
    real = "double" if dtype == "float64" else "float"
    f = "" if dtype == "float64" else "F"
    if rng == "philox":
        per = 4 if dtype == "float32" else 2
        if part == "words":
            body = ("unsigned int a, b, c, d; sdeeos_philox4x32(i, 7ULL, 5U, 0U, &a, &b, &c, &d); "
                    f"out[i] = ({real})(a ^ b ^ c ^ d);")  # per draw: divided in estimate()
        elif part == "central" and dtype == "float32":
            body = ("const float q = (float)(((double)w[i] - 2147483647.5) * 2.3283064365386962890625e-10); "
                    f"const float r = 0.180625F - q * q; out[i] = q * {_horner(_rng._A, 'r', f)} / {_horner(_rng._B, 'r', f)};")
        elif part == "central":
            body = ("const double u = sdeeos_uniform(((sdeeos_u64)w[i] << 32) | w[i + 1]); const double q = u - 0.5; "
                    f"const double r = 0.180625 - q * q; out[i] = q * {_horner(_rng._A, 'r', '')} / {_horner(_rng._B, 'r', '')};")
        else:
            body = ("out[i] = sdeeos_normal_philox_f32(w[i]);" if dtype == "float32" else
                    "out[i] = sdeeos_normal_philox_f64(w[i], w[i + 1]);")
        args = "const unsigned int* w"
    else:
        if part == "words":
            body = f"out[i] = ({real})sdeeos_mix64(w[i] + w[i + 1]);"  # the Weyl step: one add
        elif part == "central" and dtype == "float32":
            body = ("const long long n2 = 2LL * (long long)(w[i] >> 11) + 1LL - (1LL << 53); "
                    "const float q = (float)n2 * 5.5511151231257827021181583404541015625e-17F; "
                    f"const float r = 0.180625F - q * q; out[i] = q * {_horner(_rng._A, 'r', f)} / {_horner(_rng._B, 'r', f)};")
        elif part == "central":
            body = ("const double u = sdeeos_uniform(w[i]); const double q = u - 0.5; "
                    f"const double r = 0.180625 - q * q; out[i] = q * {_horner(_rng._A, 'r', '')} / {_horner(_rng._B, 'r', '')};")
        else:
            body = f"out[i] = sdeeos_normal_{'f64' if dtype == 'float64' else 'f32'}(w[i]);"
        args = "const unsigned long long* w"
    return (rng_source(dtype, rng) + f'\nextern "C" __global__ void probe({args}, {real}* out)\n'
            "{ const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; " + body + " }\n")


def _count(ptx: str) -> Counter:
    c = Counter()
    body = ptx[ptx.index(".entry"):]
    for line in body.splitlines():
        op = line.strip().split(" ")[0].split("\t")[0]
        if not op or op.startswith(("//", ".", "{", "}", "@", "$", "ret", "ld.param", "cvta")) or op.endswith(":"):
            if op.startswith("@"):  # predicated branch
                c["int"] += 1
            continue
        if op.startswith(("ld.", "st.")):
            continue  # the probe's own memory traffic
        if re.match(r"mul\.(lo|hi|wide)\.[us]64", op) or re.match(r"mad\.(lo|hi)\.[us]64", op):
            c["int"] += EXPAND["mul64"]
        elif op.startswith(("div.rn.f64", "rcp.rn.f64")):
            c["fp64"] += EXPAND["div64"]
        elif op.startswith("sqrt.rn.f64"):
            c["fp64"] += EXPAND["sqrt64"]
        elif op.startswith(("div.rn.f32", "div.rn.ftz.f32")):
            c["fp32"] += EXPAND["div32"]
        elif op.startswith(("sqrt.rn.f32", "sqrt.rn.ftz.f32")):
            c["fp32"] += EXPAND["sqrt32"]
        elif ".f64" in op:
            c["fp64"] += 1
        elif ".f32" in op:
            c["fp32"] += 1
        else:
            c["int"] += 1
    return c


def _ptx(source: str) -> str:
    ok, log, out = nvrtc_compile(source, [*_NVRTC_OPTIONS, "--fmad=false", "-arch=compute_90", "-ftz=true"])
    if not ok:
        raise RuntimeError(log)
    return out.decode()


def estimate(dtype: str, rng: str, step_cost: Counter) -> dict:
    words = _count(_ptx(_probe(dtype, rng, "words")))
    if rng == "philox":  # one call serves 4 (float32) or 2 (float64) draws
        per = 4 if dtype == "float32" else 2
        words = Counter({k: v / per for k, v in words.items()})
    central = _count(_ptx(_probe(dtype, rng, "central")))
    full = _count(_ptx(_probe(dtype, rng, "full")))
    tail = Counter({k: max(full[k] - central[k], 0) for k in ("int", "fp32", "fp64")})
    total = Counter()
    for part, weight in ((words, 1.0), (central, 1.0), (tail, 0.15), (step_cost, 1.0)):
        for k, v in part.items():
            total[k] += weight * v
    seconds = {k: total[k] / (PER_CLOCK[k] * SMS * CLOCK) for k in PER_CLOCK}
    return {"ops": dict(total), "pessimistic": 1 / sum(seconds.values()), "optimistic": 1 / max(seconds.values())}


def main() -> None:
    if find_nvrtc() is None:
        print("no NVRTC library: pip install nvidia-cuda-nvrtc-cu12 (or set SDEEOS_NVRTC)")
        return
    # the reduced model's update and sums per step (hand count of the generated kernel's step:
    # 2 state updates, 4 observables with their squares in double, each square added by one fma in
    # float32 mode; see sdeeos.engines._cuda_template)
    steps = {"float64": Counter(fp64=24), "float32": Counter(fp32=14, fp64=8)}
    print("| scheme | int ops | FP32 ops | FP64 ops | est. traj-steps/s (pipes summed .. overlapped) |")
    print("|---|---:|---:|---:|---|")
    for dtype in ("float64", "float32"):
        for rng in ("splitmix", "philox"):
            e = estimate(dtype, rng, steps[dtype])
            o = e["ops"]
            print(f"| {_rng.rng_scheme(dtype, rng)} | {o.get('int', 0):.0f} | {o.get('fp32', 0):.0f} | "
                  f"{o.get('fp64', 0):.0f} | {e['pessimistic']:.2g} .. {e['optimistic']:.2g} |")


if __name__ == "__main__":
    main()
