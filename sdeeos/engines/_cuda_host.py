r"""Run the generated CUDA kernels on the CPU: the same source, compiled by g++ through a small shim.

This is how the GPU kernel is checked where there is no GPU (CI, laptops): the source that
`sdeeos.engines._cuda_template` writes for NVRTC is compiled as plain C++ with a shim header that
defines the CUDA keywords away and provides ``blockIdx``/``threadIdx``/``blockDim`` as globals plus
the intrinsics the kernel uses (``__popcll``, ``__umulhi``, ``__longlong_as_double``).  A generated driver
loops over every (block, thread) and calls the unmodified ``__global__`` function, so the index
arithmetic, the RNG, the fold/divergence/recording logic and the printed update all run exactly
as written for the GPU.

`HostDevice` exposes the compiled kernels through the same small device interface as CuPy's
(`sdeeos.engines._cupy.CupyDevice`), so `CupyEngine` and `run_summary` (residency, chunking,
host synchronisation, device-side reductions) run unchanged on the CPU in tests.

Compiler flags: ``-O2 -ffp-contract=off -fno-fast-math``: no FMA contraction, IEEE semantics, which
is what the GPU build does with NVRTC's ``--fmad=false``.  ``fmad=True`` compiles with
``-mfma -ffp-contract=fast`` where the CPU has FMA: an *indication* of the size of the FMA effect,
not NVRTC's exact contraction choices.  ``perturb_log=True`` replaces ``log`` by a deliberately
1-ulp-wrong version (pseudo-random direction, on about half the arguments): a stand-in for a libm
with CUDA's documented 1 ulp ``log`` error, used to measure how such differences propagate into
per-trajectory statistics.

Not a user-facing backend (serial, ~10-20 M trajectory-steps/s): a test and debugging tool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from ._numba import cache_dir as numba_cache_dir
from ._cuda_template import KERNEL_ARGS, KERNEL_NAME, KEYS_KERNEL_ARGS, KEYS_KERNEL_NAME, KernelSource

__all__ = ["SHIM", "cpu_has_fma", "find_cxx", "find_nvrtc", "nvrtc_libraries", "nvrtc_compile", "host_driver_source", "build_host_library", "HostDevice"]

SHIM = r"""// sdeeos host shim: compile a sdeeos CUDA kernel as plain C++ (tests and debugging only).
#include <cmath>
#include <cstring>
#include <cstdint>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
struct sdeeos_dim3 { unsigned int x, y, z; };
static sdeeos_dim3 blockIdx, threadIdx, blockDim, gridDim;
static inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned int)(((unsigned long long)a * b) >> 32); }
static inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, sizeof d); return d; }
using std::fabs; using std::sqrt; using std::log; using std::exp; using std::pow;
using std::fmin; using std::fmax; using std::fma;
#ifdef SDEEOS_PERTURB_LOG
// A libm whose log is off by one ulp on about half the arguments (direction from the argument's bits).
static inline double sdeeos_perturbed_log(double x)
{
    const double y = std::log(x);
    unsigned long long b; std::memcpy(&b, &x, sizeof b);
    b ^= b >> 29; b *= 0xBF58476D1CE4E5B9ULL; b ^= b >> 32;
    if (b & 1ULL) return y;
    return std::nextafter(y, (b & 2ULL) ? HUGE_VAL : -HUGE_VAL);
}
#define log(x) sdeeos_perturbed_log(x)
#endif
"""

_C_TYPES = {
    "sdeeos_real*": ctypes.c_void_p, "const double*": ctypes.c_void_p, "const sdeeos_u64*": ctypes.c_void_p,
    "double*": ctypes.c_void_p, "unsigned char*": ctypes.c_void_p, "long long*": ctypes.c_void_p,
    "sdeeos_u64*": ctypes.c_void_p, "long long": ctypes.c_longlong, "double": ctypes.c_double,
    "sdeeos_u64": ctypes.c_ulonglong,
}


def cpu_has_fma() -> bool:
    """Whether this CPU executes fused multiply-adds (needed for ``fmad=True`` builds)."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " fma " in f" {line.split(':', 1)[1].strip()} " for line in fh)
    except OSError:
        return False


def find_cxx() -> str | None:
    """The C++ compiler to use (``$CXX`` or ``g++`` on PATH), or None."""
    cxx = os.environ.get("CXX") or "g++"
    return shutil.which(cxx)


def _driver(name: str, args) -> str:
    params = ", ".join(f"{c} {n}" if c.endswith("*") else f"const {c} {n}" for n, c in args)
    call = ", ".join(n for n, _ in args)
    return f"""
extern "C" void host_{name}(unsigned int grid, unsigned int block, {params})
{{
    blockDim.x = block; blockDim.y = blockDim.z = 1;
    gridDim.x = grid; gridDim.y = gridDim.z = 1;
    for (unsigned int b = 0; b < grid; ++b)
        for (unsigned int th = 0; th < block; ++th) {{
            blockIdx.x = b; threadIdx.x = th;
            {name}({call});
        }}
}}
"""


def host_driver_source() -> str:
    """Launch loops ``host_<kernel>(grid, block, args...)`` for both kernels (appended to the source)."""
    return _driver(KERNEL_NAME, KERNEL_ARGS) + _driver(KEYS_KERNEL_NAME, KEYS_KERNEL_ARGS)


def _cache_dir() -> Path:
    path = numba_cache_dir().parent / "host-cuda"
    path.mkdir(parents=True, exist_ok=True)
    return path


_LIBS: dict[str, ctypes.CDLL] = {}
_LOCK = threading.Lock()


def build_host_library(kernel: KernelSource, *, fmad: bool = False, perturb_log: bool = False) -> ctypes.CDLL:
    """Compile ``kernel.source`` with g++ through `SHIM` into a shared library (cached on disk)."""
    cxx = find_cxx()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    flags = ["-std=c++17", "-O2", "-fPIC", "-shared", "-fno-fast-math", "-Wall", "-Wno-unused-variable",
             "-Wno-unused-but-set-variable"]
    if fmad:
        if not cpu_has_fma():
            raise RuntimeError("fmad=True needs a CPU with FMA instructions")
        flags += (["-mfma"] if platform.machine().lower() in ("x86_64", "amd64", "i686") else []) + ["-ffp-contract=fast"]
    else:
        flags.append("-ffp-contract=off")
    if perturb_log:
        flags.append("-DSDEEOS_PERTURB_LOG")
    text = kernel.source + host_driver_source()
    digest = hashlib.sha256("\0".join([SHIM, text, cxx, *flags]).encode()).hexdigest()[:20]
    with _LOCK:
        if digest in _LIBS:
            return _LIBS[digest]
        out = _cache_dir() / f"sdeeos_host_{digest}.so"
        if not out.exists():
            src = out.with_suffix(f".{os.getpid()}.cpp")
            shim = out.with_name(f"sdeeos_host_shim_{digest}.{os.getpid()}.h")
            shim.write_text(SHIM)
            src.write_text(text)
            tmp = out.with_suffix(f".{os.getpid()}.so")
            proc = subprocess.run([cxx, *flags, "-include", str(shim), "-x", "c++", str(src), "-o", str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"g++ failed on the generated CUDA source ({src}):\n{proc.stderr}")
            out.with_suffix(".warnings").write_text(proc.stderr)
            os.replace(tmp, out)
            src.unlink()
            shim.unlink()
        lib = ctypes.CDLL(str(out))
        warnings = out.with_suffix(".warnings")
        lib.sdeeos_warnings = warnings.read_text() if warnings.exists() else ""  # -Wall output of the build
        for name, args in ((KERNEL_NAME, KERNEL_ARGS), (KEYS_KERNEL_NAME, KEYS_KERNEL_ARGS)):
            fn = getattr(lib, f"host_{name}")
            fn.restype = None
            fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [_C_TYPES[c] for _, c in args]
        _LIBS[digest] = lib
        return lib


# ---------------------------------------------------------------------------------- NVRTC, no GPU
def nvrtc_libraries() -> list[str]:
    """Paths of every NVRTC library found: ``$SDEEOS_NVRTC`` alone when set, else the nvidia-cuda-nvrtc
    wheels (CUDA 13's ``nvidia.cu13``, CUDA 12's ``nvidia.cuda_nvrtc``) and the system's."""
    env = os.environ.get("SDEEOS_NVRTC")
    if env:
        return [env] if os.path.exists(env) else []
    found = []
    for pkg in ("nvidia.cu13", "nvidia.cuda_nvrtc"):
        try:
            mod = __import__(pkg, fromlist=["__path__"])
        except ImportError:
            continue
        for base in getattr(mod, "__path__", []):
            hits = sorted(glob.glob(os.path.join(base, "lib", "libnvrtc.so.*")))
            hits = [h for h in hits if "builtins" not in h and ".alt." not in h]
            if hits:
                found.append(hits[0])
                break
    system = ctypes.util.find_library("nvrtc")
    return found + ([system] if system else [])


def find_nvrtc() -> str | None:
    """Path of an NVRTC library, if one is installed (the first of `nvrtc_libraries`).  NVRTC compiles
    CUDA C++ to PTX/CUBIN on the CPU: no GPU is needed."""
    libraries = nvrtc_libraries()
    return libraries[0] if libraries else None


def nvrtc_compile(source: str, options, *, target: str = "ptx", library: str | None = None):
    """Compile ``source`` with NVRTC; returns ``(ok, log, ptx_or_cubin_bytes)``.  Development check."""
    path = library or find_nvrtc()
    if path is None:
        raise RuntimeError("no NVRTC library found (pip install nvidia-cuda-nvrtc-cu12, or set SDEEOS_NVRTC)")
    nv = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    if nv.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"sdeeos_kernel.cu", 0, None, None):
        raise RuntimeError("nvrtcCreateProgram failed")
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = nv.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nv.nvrtcGetProgramLog(prog, log)
        if status:
            return False, log.value.decode(errors="replace"), b""
        get_size, get = (nv.nvrtcGetPTXSize, nv.nvrtcGetPTX) if target == "ptx" else (nv.nvrtcGetCUBINSize, nv.nvrtcGetCUBIN)
        get_size(prog, ctypes.byref(size))
        out = ctypes.create_string_buffer(size.value)
        get(prog, out)
        return True, log.value.decode(errors="replace"), out.raw.rstrip(b"\0")
    finally:
        nv.nvrtcDestroyProgram(ctypes.byref(prog))


class _HostFunction:
    def __init__(self, fn, args):
        self._fn = fn
        self._args = args

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple) -> None:
        if len(args) != len(self._args):
            raise TypeError(f"expected {len(self._args)} kernel arguments, got {len(args)}")
        c_args = []
        for value, (name, ctype) in zip(args, self._args):
            if ctype.endswith("*"):
                if not (isinstance(value, np.ndarray) and value.flags.c_contiguous):
                    raise TypeError(f"kernel argument {name} must be a C-contiguous array")
                c_args.append(value.ctypes.data)
            else:
                c_args.append(value.item() if isinstance(value, np.generic) else value)
        self._fn(int(grid[0]), int(block[0]), *c_args)


class HostDevice:
    """The device interface of `CupyDevice`, backed by NumPy arrays and g++-compiled kernels."""

    name = "CPU (g++ build of the CUDA source)"

    def __init__(self, *, free_bytes: int = 1 << 40, perturb_log: bool = False):
        self.xp = np
        self._free = int(free_bytes)
        self.perturb_log = perturb_log

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return (True, "") if find_cxx() else (False, "no C++ compiler (g++) found")

    def functions(self, kernel: KernelSource, fmad: bool):
        lib = build_host_library(kernel, fmad=fmad, perturb_log=self.perturb_log)
        return {KERNEL_NAME: _HostFunction(getattr(lib, f"host_{KERNEL_NAME}"), KERNEL_ARGS),
                KEYS_KERNEL_NAME: _HostFunction(getattr(lib, f"host_{KEYS_KERNEL_NAME}"), KEYS_KERNEL_ARGS)}

    def free_bytes(self) -> int:
        return self._free

    def to_device(self, host: np.ndarray, dtype) -> np.ndarray:
        return np.array(host, dtype=dtype, order="C", copy=True)

    def to_host(self, dev: np.ndarray, out: np.ndarray) -> None:
        out[...] = dev

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def scalar(self, dev) -> float:
        return float(dev)

    def synchronize(self) -> None:
        pass
