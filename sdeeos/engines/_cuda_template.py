r"""CUDA C++ source of the GPU kernels, generated from a model's SymPy step with one small template.

Nothing here needs a GPU or CuPy: this module only *writes* source.  The same source is compiled

* by NVRTC through CuPy (`sdeeos.engines._cupy`, ``backend="cupy"``), one thread per trajectory;
* by g++ through the shim of `sdeeos.engines._cuda_host`, which runs the very same kernel function
  on the CPU (a loop over ``blockIdx``/``threadIdx``) so that tests without a GPU check the kernel,
  its RNG and its fold/divergence/recording logic against the Numba engine trajectory by trajectory.

The kernel reproduces the generated Numba kernel (`sdeeos.engines._numba`), which is the spec:

* at each step ``t`` of ``[t0, t1)``: record state and observables when ``t % rec_every == 0``;
  store the state at ``t == burn_in``; draw the step's normals ``z_k`` = draw ``t * n_noise + k``
  of the trajectory's stream; after burn-in add the observables of the current state (and their
  squares) to the partial sums; apply the update;
* after step ``t`` with ``(t + 1) % fold == 0`` or ``t + 1 == n_steps``: a live trajectory whose
  state is beyond the divergence bound (or not finite), or whose partial sum of squares overflowed,
  is marked dead (``diverged_step = t + 1``, state set to NaN, partial sums dropped); otherwise its
  partial sums are folded into the totals.  Partial sums of every lane restart from zero.

The update and observables are printed by the ``print_c`` printer of `sdeeos.engines._codegen`
(same common subexpressions, same operation order) with three CUDA-specific changes:
``Min``/``Max`` keep Python's ``min``/``max`` semantics (NaN handling as in Numba, where C's
``fmin`` would drop a NaN), number symbols (``pi``, ``E``) are printed as literals (NVRTC has no
``M_PI``), and in float32 mode every literal and function is single precision (``1.0F``, ``logf``).

Precision modes (``dtype``):

* ``"float64"``: every operation as in the Numba kernel.  Compiled with ``--fmad=false`` the
  results are bit-identical to the CPU except where CUDA's double ``log`` (max. 1 ulp error) differs
  from glibc's in the AS241 tail branch (about 15 % of normals go through it).
* ``"float32"``: state, update and observables in float; the normal is computed from the *same*
  64-bit word with correctly rounded single-precision ``q = u - 1/2`` and ``min(u, 1 - u)`` (integer
  arithmetic, so the tails reach |z| ~ 8.3 as in float64) and the AS241 rational functions in float;
  partial and total sums stay in double (a float sum over 10^4 steps would lose ~1e-4 by itself); each
  square is added with one ``fma`` of the widened observable (exact square: the same bits as a
  multiply and an add, one FP64 instruction fewer).
"""

from __future__ import annotations

import dataclasses
import hashlib

from sympy.codegen.ast import float32 as _sp_float32
from sympy.codegen.ast import real as _sp_real

from .. import _rng
from .._errors import ParameterError
from .._version import __version__
from .._contract import SymbolicStep
from ._codegen import TEMP_PREFIX, CPrinter, PrintedStep, code_names, print_step

__all__ = [
    "DTYPES",
    "KERNEL_NAME",
    "KEYS_KERNEL_NAME",
    "KERNEL_ARGS",
    "KEYS_KERNEL_ARGS",
    "KernelSource",
    "cuda_printer",
    "print_cuda",
    "rng_source",
    "kernel_source",
]

DTYPES = ("float64", "float32")
KERNEL_NAME = "sdeeos_advance"
KEYS_KERNEL_NAME = "sdeeos_stream_keys"

#: The advance kernel's parameters, in order: (name, C type).  ``sdeeos_real`` is ``double`` or ``float``.
#: The launchers (`_cupy`, `_cuda_host`) and the argument check are driven by this table.
KERNEL_ARGS: tuple[tuple[str, str], ...] = (
    ("state", "sdeeos_real*"),               # (n_state, m)
    ("params", "const double*"),      # (n_params,)
    ("keys", "const sdeeos_u64*"),    # (m,)
    ("gammas", "const sdeeos_u64*"),  # (m,)
    ("t0", "long long"),
    ("t1", "long long"),
    ("n_steps", "long long"),
    ("burn_in", "long long"),
    ("fold", "long long"),
    ("bound", "double"),
    ("acc_sum", "double*"),           # (n_obs, m)
    ("acc_sq", "double*"),            # (n_obs, m)
    ("part_sum", "double*"),          # (n_obs, m)
    ("part_sq", "double*"),           # (n_obs, m)
    ("alive", "unsigned char*"),      # (m,)
    ("diverged_step", "long long*"),  # (m,)
    ("burn_state", "sdeeos_real*"),          # (n_state, m)
    ("rec", "sdeeos_real*"),                 # (rec_rows, n_state + n_obs, m), rows rec_row0 ...
    ("rec_every", "long long"),       # 0: no recording
    ("rec_row0", "long long"),        # first record row held in ``rec`` (= ceil(t0 / rec_every))
    ("m", "long long"),               # trajectories in this launch
)

#: Parameters of the stream-key kernel: keys and increments of trajectories ``first .. first + m - 1``.
KEYS_KERNEL_ARGS: tuple[tuple[str, str], ...] = (
    ("seed", "sdeeos_u64"),
    ("first", "sdeeos_u64"),
    ("keys", "sdeeos_u64*"),
    ("gammas", "sdeeos_u64*"),
    ("m", "long long"),
)


# ---------------------------------------------------------------------------------- printing
class _CudaPrinter(CPrinter):
    """``print_c``'s printer with Python min/max semantics, literal constants and a float32 mode."""

    def __init__(self, dtype: str):
        settings = {}
        if dtype == "float32":
            settings["type_aliases"] = {_sp_real: _sp_float32}
        super().__init__(settings)
        self._single = dtype == "float32"

    def _literal(self, value: float) -> str:
        return repr(float(value)) + ("F" if self._single else "")

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp.is_Integer and 1 <= abs(int(exp)) <= 8:  # as _codegen._small_int_power
            b = self.parenthesize(base, 1000)
            prod = "*".join([b] * abs(int(exp)))
            one = "1.0F" if self._single else "1.0"
            return f"({prod})" if exp > 0 else f"({one}/({prod}))"
        return super()._print_Pow(expr, rational=rational)

    def _fold(self, fn: str, expr) -> str:
        args = [f"(sdeeos_real)({self._print(a)})" for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"{fn}({out}, {a})"
        return out

    def _print_Min(self, expr):
        return self._fold("sdeeos_pymin", expr)

    def _print_Max(self, expr):
        return self._fold("sdeeos_pymax", expr)

    def _print_NumberSymbol(self, expr):
        return self._literal(expr.evalf(20))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_GoldenRatio = _print_Catalan = _print_NumberSymbol


def cuda_printer(dtype: str = "float64") -> _CudaPrinter:
    if dtype not in DTYPES:
        raise ParameterError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return _CudaPrinter(dtype)


def print_cuda(step: SymbolicStep, dtype: str = "float64") -> PrintedStep:
    """The step printed for the CUDA kernel (same CSE and operation order as `print_c`)."""
    return print_step(step, cuda_printer(dtype), TEMP_PREFIX)


# ---------------------------------------------------------------------------------- RNG in C
def _horner(coeffs, var: str, suffix: str) -> str:
    out = repr(float(coeffs[0])) + suffix
    for c in coeffs[1:]:
        out = f"({out} * {var} + {repr(float(c))}{suffix})"
    return out


def _philox_source() -> str:
    """Philox4x32-10 and the Philox float32/float64 normals (`sdeeos._rng`, Philox family)."""
    m0, m1 = _rng.PHILOX_M
    w0, w1 = _rng.PHILOX_W
    return f"""
// ---- Philox4x32-10 (Salmon et al. 2011, Random123): counter (block, traj), key = seed
__device__ __forceinline__ void sdeeos_philox4x32(sdeeos_u64 blk, sdeeos_u64 traj, unsigned int k0, unsigned int k1,
                                                  unsigned int* w0, unsigned int* w1, unsigned int* w2, unsigned int* w3)
{{
    unsigned int c0 = (unsigned int)blk, c1 = (unsigned int)(blk >> 32);
    unsigned int c2 = (unsigned int)traj, c3 = (unsigned int)(traj >> 32);
    for (int r = 0; r < 10; ++r) {{
        if (r > 0) {{ k0 += {w0:#x}U; k1 += {w1:#x}U; }}
        const unsigned int hi0 = __umulhi({m0:#x}U, c0), lo0 = {m0:#x}U * c0;
        const unsigned int hi1 = __umulhi({m1:#x}U, c2), lo1 = {m1:#x}U * c2;
        c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
    }}
    *w0 = c0; *w1 = c1; *w2 = c2; *w3 = c3;
}}

// -log(m 2**-e0) for an integer 1 <= m < 2**53 with +, -, *, / only: sdeeos._rng.neglog_int_nb
__device__ __forceinline__ double sdeeos_neglog_int(long long m, long long e0)
{{
    long long v = m, e = 0;
    for (int sh = 32; sh >= 1; sh >>= 1) {{
        const long long t = (v >= (1LL << sh)) ? 1LL : 0LL;
        v = v >> (sh * t);
        e += sh * t;
    }}
    double f = (double)(m << (52 - e)) * {_rng._TWO_M52!r};
    if (f > {_rng._SQRT2!r}) {{ f = f * 0.5; e = e + 1; }}
    const double s = (f - 1.0) / (f + 1.0);
    const double z = s * s;
    const double p = {_horner(_rng._ATANH, "z", "")};
    const double s2 = s + s;
    const double k = (double)(e - e0);
    return -(k * {_rng.LN2_HI!r} + (k * {_rng.LN2_LO!r} + (s2 + s2 * (z * p))));
}}

// float64: two words make one 64-bit word (first word high); AS241's central branch as the splitmix
// scheme, its tails from the exact integer 2**54 min(u, 1 - u) through sdeeos_neglog_int (no libm log)
__device__ __forceinline__ double sdeeos_normal_philox_f64(unsigned int hi, unsigned int lo)
{{
    const sdeeos_u64 w = ((sdeeos_u64)hi << 32) | (sdeeos_u64)lo;
    const double u = sdeeos_uniform(w);
    const double q = u - 0.5;
    if (fabs(q) <= {_rng.AS241_CENTRAL_BOUND!r}) {{
        const double r = 0.180625 - q * q;
        return q * {_horner(_rng._A, "r", "")} / {_horner(_rng._B, "r", "")};
    }}
    const long long k2 = 2LL * (long long)(w >> 11) + 1LL;
    const long long m2 = (k2 < (1LL << 53)) ? k2 : (1LL << 54) - k2;
    const double r = sqrt(sdeeos_neglog_int(m2, 54));
    const double a = r - 1.6, b = r - 5.0;
    const double near = {_horner(_rng._C, "a", "")} / {_horner(_rng._D, "a", "")};
    const double far = {_horner(_rng._E, "b", "")} / {_horner(_rng._F, "b", "")};
    const double x = (r <= 5.0) ? near : far;
    return (u - 0.5 < 0.0) ? -x : x;
}}
"""


def _philox_f32_source() -> str:
    f = "F"
    return f"""
// float32: one word, u = (w + 1/2) 2**-32; q = u - 1/2 rounded once (exact in double first); the tails
// from the exact integer 2**33 min(u, 1 - u) through sdeeos_neglog_int, rounded once to float
__device__ __forceinline__ float sdeeos_normal_philox_f32(unsigned int w)
{{
    const float q = (float)(((double)w - 2147483647.5) * 2.3283064365386962890625e-10);
    if (fabsf(q) <= {_rng.AS241_CENTRAL_BOUND!r}F) {{
        const float r = 0.180625F - q * q;
        return q * {_horner(_rng._A, "r", f)} / {_horner(_rng._B, "r", f)};
    }}
    const long long k2 = 2LL * (long long)w + 1LL;
    const long long m2 = (k2 < (1LL << 32)) ? k2 : (1LL << 33) - k2;
    const float r = sqrtf((float)sdeeos_neglog_int(m2, 33));
    const float a = r - 1.6F, b = r - 5.0F;
    const float near = {_horner(_rng._C, "a", f)} / {_horner(_rng._D, "a", f)};
    const float far = {_horner(_rng._E, "b", f)} / {_horner(_rng._F, "b", f)};
    const float x = (r <= 5.0F) ? near : far;
    return (k2 < (1LL << 32)) ? -x : x;
}}
"""


def rng_source(dtype: str = "float64", rng: str = "splitmix") -> str:
    """C/CUDA source of the RNG scheme of `sdeeos._rng` (constants taken from that module)."""
    if dtype not in DTYPES:
        raise ParameterError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    rng = _rng.check_rng(rng, dtype)
    if rng == "philox":
        return _splitmix_source(dtype) + _philox_source() + (_philox_f32_source() if dtype == "float32" else "")
    return _splitmix_source(dtype)


def _splitmix_source(dtype: str) -> str:
    d = ""  # double-precision AS241, operation for operation as sdeeos._rng.ndtri_nb
    f = "F"
    common = f"""\
// ---- RNG scheme {_rng.RNG_SCHEME} (see sdeeos/_rng.py), generated from its constants
typedef unsigned long long sdeeos_u64;

__device__ __forceinline__ sdeeos_u64 sdeeos_mix64(sdeeos_u64 z)
{{
    z = (z ^ (z >> 30)) * {int(_rng._M1):#x}ULL;
    z = (z ^ (z >> 27)) * {int(_rng._M2):#x}ULL;
    return z ^ (z >> 31);
}}

// 64-bit word of draw c of the stream (key, gamma)
__device__ __forceinline__ sdeeos_u64 sdeeos_word(sdeeos_u64 key, sdeeos_u64 gamma, sdeeos_u64 c)
{{
    return sdeeos_mix64(key + (c + 1ULL) * gamma);
}}

// key and odd increment of trajectory traj (SplittableRandom.split / mixGamma)
__device__ __forceinline__ void sdeeos_stream_key(sdeeos_u64 seed, sdeeos_u64 traj,
                                                  sdeeos_u64* key_out, sdeeos_u64* gamma_out)
{{
    const sdeeos_u64 golden = {int(_rng.GOLDEN):#x}ULL;
    const sdeeos_u64 base = sdeeos_mix64(seed + golden);
    const sdeeos_u64 key = sdeeos_mix64(base + (traj + 1ULL) * golden);
    sdeeos_u64 g = key + golden;
    g = (g ^ (g >> 33)) * {int(_rng._GM1):#x}ULL;
    g = (g ^ (g >> 33)) * {int(_rng._GM2):#x}ULL;
    g = (g ^ (g >> 33)) | 1ULL;
    if (__popcll(g ^ (g >> 1)) < 24) g ^= {int(_rng._ALT):#x}ULL;
    *key_out = key;
    *gamma_out = g;
}}

// uniform in (0, 1): ((w >> 11) + 0.5) * 2**-53, exact
__device__ __forceinline__ double sdeeos_uniform(sdeeos_u64 w)
{{
    return ((double)(w >> 11) + 0.5) * 1.1102230246251565404236316680908203125e-16;
}}

// Wichura's AS241 (PPND16) in double, the operations of sdeeos._rng.ndtri_nb in the same order
__device__ __forceinline__ double sdeeos_ndtri(double u)
{{
    double q = u - 0.5;
    if (fabs(q) <= {_rng.AS241_CENTRAL_BOUND!r}) {{
        const double r = 0.180625 - q * q;
        return q * {_horner(_rng._A, "r", d)} / {_horner(_rng._B, "r", d)};
    }}
    double r = (q <= 0.0) ? u : 1.0 - u;
    r = sqrt(-log(r));
    double x;
    if (r <= 5.0) {{
        r = r - 1.6;
        x = {_horner(_rng._C, "r", d)} / {_horner(_rng._D, "r", d)};
    }} else {{
        r = r - 5.0;
        x = {_horner(_rng._E, "r", d)} / {_horner(_rng._F, "r", d)};
    }}
    return (q < 0.0) ? -x : x;
}}

__device__ __forceinline__ double sdeeos_normal_f64(sdeeos_u64 w)
{{
    return sdeeos_ndtri(sdeeos_uniform(w));
}}
"""
    if dtype == "float64":
        return common
    return common + f"""
// float32: the same word; q = u - 1/2 and min(u, 1 - u) from exact integers, each rounded once to
// float (so the tails are kept), then AS241 in single precision.
// n2 = 2**54 (u - 1/2): an odd integer (splitmix) or an odd multiple of 2**21 (philox), never 0
__device__ __forceinline__ float sdeeos_ndtri32_n2(long long n2)
{{
    const long long k2 = n2 + (1LL << 53);                   // 2**54 * u
    const float q = (float)n2 * 5.5511151231257827021181583404541015625e-17F;  // * 2**-54
    if (fabsf(q) <= {_rng.AS241_CENTRAL_BOUND!r}F) {{
        const float r = 0.180625F - q * q;
        return q * {_horner(_rng._A, "r", f)} / {_horner(_rng._B, "r", f)};
    }}
    const long long m2 = (n2 < 0) ? k2 : (1LL << 54) - k2;  // 2**54 * min(u, 1 - u)
    float r = (float)m2 * 5.5511151231257827021181583404541015625e-17F;
    r = sqrtf(-logf(r));
    float x;
    if (r <= 5.0F) {{
        r = r - 1.6F;
        x = {_horner(_rng._C, "r", f)} / {_horner(_rng._D, "r", f)};
    }} else {{
        r = r - 5.0F;
        x = {_horner(_rng._E, "r", f)} / {_horner(_rng._F, "r", f)};
    }}
    return (n2 < 0) ? -x : x;
}}

__device__ __forceinline__ float sdeeos_normal_f32(sdeeos_u64 w)
{{
    return sdeeos_ndtri32_n2(2LL * (long long)(w >> 11) + 1LL - (1LL << 53));
}}
"""


# ---------------------------------------------------------------------------------- kernels
@dataclasses.dataclass(frozen=True)
class KernelSource:
    """Generated source of one (step, dtype): the advance kernel and the stream-key kernel."""

    source: str
    dtype: str
    n_state: int
    n_obs: int
    n_noise: int
    n_params: int
    state_names: tuple[str, ...]
    obs_names: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:20]

    @property
    def itemsize(self) -> int:
        return 8 if self.dtype == "float64" else 4


_TEMPLATE = """\
// Generated by sdeeos {version} from the SymPy step of {model}.{method} ({dtype}, {rng_name}); do not edit.
// Compiles with NVRTC (sdeeos.engines._cupy) and, through a host shim, with g++ (sdeeos.engines._cuda_host).
typedef {ctype} sdeeos_real;

{rng}
// ---- helpers
__device__ __forceinline__ sdeeos_real sdeeos_pymin(sdeeos_real a, sdeeos_real b) {{ return (b < a) ? b : a; }}  // Python min()
__device__ __forceinline__ sdeeos_real sdeeos_pymax(sdeeos_real a, sdeeos_real b) {{ return (b > a) ? b : a; }}  // Python max()

extern "C" __global__ void {keys_name}({keys_params})
{{
    const long long sd_j = (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
    if (sd_j >= sd_m) return;
{keys_body}
}}

// One thread advances one trajectory from t0 to t1 with its state in registers.
extern "C" __global__ void {name}({params})
{{
    const long long sd_j = (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
    if (sd_j >= sd_m) return;
    // parameters
{unpack_params}
    // state and sums of this trajectory
{load}
    const sdeeos_u64 sd_key = sd_keys[sd_j];
    const sdeeos_u64 sd_gamma = sd_gammas[sd_j];
    unsigned char sd_live = sd_alive[sd_j];
    {weyl}
    long long sd_next_rec = (sd_rec_every > 0) ? ((sd_t0 + sd_rec_every - 1) / sd_rec_every) * sd_rec_every : -1;
    long long sd_t = sd_t0;
    while (sd_t < sd_t1) {{
        long long sd_end = (sd_t / sd_fold + 1) * sd_fold;  // next fold boundary
        if (sd_end > sd_t1) sd_end = sd_t1;
        for (; sd_t < sd_end; ++sd_t) {{
            if (sd_t == sd_next_rec) {{
                const long long sd_row = sd_t / sd_rec_every - sd_rec_row0;
{obs_code_rec}
{record}
                sd_next_rec += sd_rec_every;
            }}
            if (sd_t == sd_burn_in) {{
{burn}
            }}
{noise}
            if (sd_t >= sd_burn_in) {{
{obs_code}
{accumulate}
            }}
            {{
{update_code}
{store}
            }}
        }}
        if (sd_end % sd_fold == 0 || sd_end == sd_n_steps) {{
            if (sd_live) {{
                bool sd_ok = true;
{check}
                if (sd_ok) {{
{fold}
                }} else {{
                    sd_live = 0;
                    sd_diverged_step[sd_j] = sd_end;
{kill}
                }}
            }}
{reset}
        }}
    }}
{write_back}
    sd_alive[sd_j] = sd_live;
}}
"""


def _params_decl(args) -> str:
    return ",\n    ".join(f"{ctype} __restrict__ sd_{name}" if ctype.endswith("*") else f"const {ctype} sd_{name}"
                           for name, ctype in args)


def _indent(lines, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in lines) if lines else pad + ";"


def kernel_source(step: SymbolicStep, *, dtype: str = "float64", model_name: str = "Model",
                  method: str = "step", rng: str = "splitmix") -> KernelSource:
    """CUDA C++ source of the advance and stream-key kernels for one symbolic step, drawing from the
    random-number family ``rng`` (`sdeeos._rng`).  The step's symbols go by their `code_names`, so any
    SymPy name (a C keyword such as ``double``, LaTeX such as ``x_{1}``) prints as a C identifier."""
    rng = _rng.check_rng(rng, dtype)
    printer = cuda_printer(dtype)
    coded = code_names(step)
    printed = print_cuda(coded, dtype)
    st = [printer.doprint(s) for s in coded.state]
    ps = [printer.doprint(s) for s in coded.params]
    zs = [printer.doprint(s) for s in coded.noise]
    ns, no, nz = len(st), len(printed.observables), len(zs)
    normal = "sdeeos_normal_f64" if dtype == "float64" else "sdeeos_normal_f32"

    unpack = [f"const sdeeos_real {p} = (sdeeos_real)sd_params[{k}];" for k, p in enumerate(ps)]
    load = [f"sdeeos_real {s} = sd_state[{k} * sd_m + sd_j];" for k, s in enumerate(st)]
    load += [f"double sd_acc{k} = sd_acc_sum[{k} * sd_m + sd_j], sd_accq{k} = sd_acc_sq[{k} * sd_m + sd_j];" for k in range(no)]
    load += [f"double sd_ps{k} = sd_part_sum[{k} * sd_m + sd_j], sd_pq{k} = sd_part_sq[{k} * sd_m + sd_j];" for k in range(no)]
    obs = [f"const sdeeos_real {n} = {c};" for n, c in printed.obs_temps]
    obs += [f"const sdeeos_real sd_o{k} = {c};" for k, c in enumerate(printed.observables)]
    record = [f"sd_rec[(sd_row * {ns + no} + {k}) * sd_m + sd_j] = {s};" for k, s in enumerate(st)]
    record += [f"sd_rec[(sd_row * {ns + no} + {ns + k}) * sd_m + sd_j] = sd_o{k};" for k in range(no)]
    burn = [f"sd_burn_state[{k} * sd_m + sd_j] = {s};" for k, s in enumerate(st)]
    noise = []
    if rng == "philox":
        # draw c is word c % per of Philox block c // per (four words per block); the words not yet
        # used stay in registers sd_w0.. (shifted down as they are used)
        per = 4 if dtype == "float32" else 2
        call = ("sdeeos_philox4x32(sd_draw / {per}ULL, sd_traj, sd_k0, sd_k1, &sd_w0, &sd_w1, &sd_w2, &sd_w3);"
                .format(per=per))
        shift = "sd_w0 = sd_w1; sd_w1 = sd_w2; sd_w2 = sd_w3;" if per == 4 else "sd_w0 = sd_w2; sd_w1 = sd_w3;"
        for z in zs:
            noise += [f"if (sd_draw % {per}ULL == 0ULL) {call}"]
            noise += ([f"const sdeeos_real {z} = sdeeos_normal_philox_f32(sd_w0);"] if per == 4 else
                      [f"const sdeeos_real {z} = sdeeos_normal_philox_f64(sd_w0, sd_w1);"])
            noise += [shift, "++sd_draw;"]
        weyl = "\n    ".join([
            "const sdeeos_u64 sd_traj = sd_gamma;  // Philox: keys hold the seed, gammas the trajectory",
            "const unsigned int sd_k0 = (unsigned int)sd_key, sd_k1 = (unsigned int)(sd_key >> 32);",
            f"sdeeos_u64 sd_draw = (sdeeos_u64)sd_t0 * {nz}ULL;  // next draw number",
            "unsigned int sd_w0 = 0U, sd_w1 = 0U, sd_w2 = 0U, sd_w3 = 0U;",
            f"if (sd_draw % {per}ULL != 0ULL) {{  // this segment starts inside a block",
            f"    {call}",
            f"    for (sdeeos_u64 sd_i = 0; sd_i < sd_draw % {per}ULL; ++sd_i) {{ {shift} }}",
            "}",
        ]) if nz else ""
    else:
        # draw c = t * nz + k hashes key + (c + 1) * gamma: keep that Weyl sequence in a register and add
        # gamma per draw (exact in mod-2**64 arithmetic; saves a 64-bit multiply per draw)
        for z in zs:
            noise += [f"const sdeeos_real {z} = {normal}(sdeeos_mix64(sd_weyl));", "sd_weyl += sd_gamma;"]
        weyl = (f"sdeeos_u64 sd_weyl = sd_key + ((sdeeos_u64)sd_t0 * {nz}ULL + 1ULL) * sd_gamma;  // draw t0 * {nz}"
                if nz else "")
    accumulate = [f"sd_ps{k} += (double)sd_o{k};" for k in range(no)]
    if dtype == "float32":  # the widened square is exact, so one fused multiply-add rounds the same sum (as in Numba)
        accumulate += [f"sd_pq{k} = fma((double)sd_o{k}, (double)sd_o{k}, sd_pq{k});" for k in range(no)]
    else:
        accumulate += [f"sd_pq{k} += (double)sd_o{k} * (double)sd_o{k};" for k in range(no)]
    update = [f"const sdeeos_real {n} = {c};" for n, c in printed.update_temps]
    update += [f"const sdeeos_real sd_n{k} = {c};" for k, c in enumerate(printed.update)]
    store = [f"{s} = sd_n{k};" for k, s in enumerate(st)]
    check = [f"if (!(fabs((double){s}) <= sd_bound)) sd_ok = false;" for s in st]
    check += [f"if (!(fabs(sd_pq{k}) <= 1.7976931348623157e308)) sd_ok = false;  // finite" for k in range(no)]
    fold = [f"sd_acc{k} += sd_ps{k};" for k in range(no)] + [f"sd_accq{k} += sd_pq{k};" for k in range(no)]
    kill = [f"{s} = (sdeeos_real)__longlong_as_double(0x7ff8000000000000LL);  // NaN" for s in st]
    reset = [f"sd_ps{k} = 0.0; sd_pq{k} = 0.0;" for k in range(no)]
    write_back = [f"sd_state[{k} * sd_m + sd_j] = {s};" for k, s in enumerate(st)]
    write_back += [f"sd_acc_sum[{k} * sd_m + sd_j] = sd_acc{k}; sd_acc_sq[{k} * sd_m + sd_j] = sd_accq{k};" for k in range(no)]
    write_back += [f"sd_part_sum[{k} * sd_m + sd_j] = sd_ps{k}; sd_part_sq[{k} * sd_m + sd_j] = sd_pq{k};" for k in range(no)]

    source = _TEMPLATE.format(
        version=__version__, model=model_name, method=method, dtype=dtype, rng_name=_rng.rng_scheme(dtype, rng),
        ctype="double" if dtype == "float64" else "float", rng=rng_source(dtype, rng),
        keys_body=("    sd_keys[sd_j] = sd_seed;  // Philox: the key is the seed, the trajectory goes in the counter\n"
                   "    sd_gammas[sd_j] = sd_first + (sdeeos_u64)sd_j;" if rng == "philox" else
                   "    sdeeos_stream_key(sd_seed, sd_first + (sdeeos_u64)sd_j, &sd_keys[sd_j], &sd_gammas[sd_j]);"),
        keys_name=KEYS_KERNEL_NAME, keys_params=_params_decl(KEYS_KERNEL_ARGS),
        name=KERNEL_NAME, params=_params_decl(KERNEL_ARGS),
        unpack_params=_indent(unpack, 4), load=_indent(load, 4),
        obs_code_rec=_indent(obs, 16), record=_indent(record, 16), burn=_indent(burn, 16),
        noise=_indent(noise, 12), weyl=weyl, obs_code=_indent(obs, 16), accumulate=_indent(accumulate, 16),
        update_code=_indent(update, 16), store=_indent(store, 16), check=_indent(check, 16),
        fold=_indent(fold, 20), kill=_indent(kill, 20), reset=_indent(reset, 12),
        write_back=_indent(write_back, 4),
    )
    return KernelSource(source=source, dtype=dtype, n_state=ns, n_obs=no, n_noise=nz, n_params=len(ps),
                        state_names=step.state_names, obs_names=tuple(step.observables))
