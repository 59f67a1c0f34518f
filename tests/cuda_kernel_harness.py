"""Run CuPy ElementwiseKernel / ReductionKernel definitions on the CPU (test-only).

The package builds its CUDA kernels through chainer's memoized wrappers
``chainer.backends.cuda.elementwise(in_params, out_params, operation, name, **kw)`` and
``chainer.backends.cuda.reduce(in_params, out_params, map_expr, reduce_expr, post_map_expr,
identity, name, **kw)``.  :func:`cpu_kernels` / :func:`install` replace those two module
attributes with :func:`elementwise` / :func:`reduce` from this module, which wrap the kernel
strings in generated C++, compile them with the system C++ compiler (``$CXX`` or ``g++``,
``-std=c++17 -O2 -shared -fPIC``), load the library with :mod:`ctypes` and run it on numpy
arrays.  Every invocation is appended to :data:`calls` so that another tool can later
recompile exactly the same definitions with NVRTC.

Emulated CuPy semantics (checked against CuPy's ``_kernel.pyx`` / ``_reduction.pyx``)
-------------------------------------------------------------------------------------
* Params are ``'[raw ]TYPE NAME, ...'``.  TYPE is a numpy dtype name (bool, int8..int64,
  uint8..uint64, float16/32/64), spelled exactly as ``numpy.dtype(TYPE).name``, or a
  one-character type placeholder (``T``, ``U``, ...): CuPy treats every one-character type
  as a placeholder and every longer one as a dtype name.  Each placeholder becomes a
  ``typedef`` (``typedef float T;``).  Placeholders are bound by the dtypes of the output
  arrays given explicitly, then of the input *arrays*; python / numpy scalars never bind a
  placeholder (they are cast to their param's type), so a placeholder used only by scalars
  or by allocated outputs raises ``TypeError``, as in CuPy.  An array whose dtype differs
  from its param's fixed dtype, or from its placeholder's binding, raises ``TypeError``
  ("Type is mismatched"): CuPy does not cast arrays.
* ElementwiseKernel ``__call__(*args, size=None)``: args are the inputs, optionally
  followed by all outputs.  Non-raw arrays (inputs and given outputs) broadcast together;
  a given non-raw output must have exactly the broadcast shape.  Missing outputs are
  allocated with the broadcast shape (or ``(size,)``).  ``size=`` is allowed only when all
  arrays are raw, and is then required.  The body runs for ``ptrdiff_t i`` = 0 .. size-1
  (C-order linear index of the broadcast shape); a non-raw input name is a
  ``const TYPE &`` to its element, a non-raw output name a ``TYPE &``; ``_ind.size()`` is
  the loop size.  Raw params are ``CArray`` objects indexed with a C-order linear index
  (``x[i * C + c]``) that honours the array's strides, so views work and raw outputs are
  written straight into the caller's array; they offer ``size()``, ``shape()`` and
  ``strides()``.  Input arrays are ``const`` (writing to one fails to compile, as on the
  GPU).  Returns the output (one) or a tuple of outputs.  Names ``i`` and ``_*`` are
  reserved.
* ReductionKernel ``__call__(*args, out=None, axis=None, keepdims=False)``: non-raw inputs
  broadcast; ``axis`` (int, tuple, None = all) names the reduced axes.  For every output
  element: ``_type_reduce a = _type_reduce(identity)``; for every reduced position
  ``b = static_cast<_type_reduce>(map_expr); a = REDUCE(a, b)``; then ``POST_MAP(a)`` with
  the output names bound as references -- ``REDUCE(a, b)`` / ``POST_MAP(a)`` are the same
  macros CuPy defines.  ``reduce_type`` defaults to the ctype of the first *output* param
  (CuPy's rule) and is pasted verbatim into ``typedef ... _type_reduce;``, so it must be a
  C type or placeholder (``'double'``, ``'T'``); a numpy name such as ``'float64'`` is
  rejected with a ``ValueError`` because it would not compile under NVRTC either.  As in
  CuPy, only the first output is returned, ``identity=None`` means a value-initialised
  accumulator and a zero-size reduction without identity raises ``ValueError``.
* Kernel objects are memoized per definition; compiled libraries per generated source
  (which depends on the dtypes and on array-vs-scalar arguments, not on shapes or ndim).
  Libraries are cached on disk under ``$MIXNORM_CPU_KERNEL_CACHE`` or
  ``<tmp>/mixnorm-cpu-kernels-<uid>``, keyed by a hash of compiler, flags and source.

CPU stand-ins for CUDA names: ``__device__``, ``__host__``, ``__global__``,
``__forceinline__``, ``__restrict__``, ``rsqrt``/``rsqrtf``, ``__expf``/``__logf``/
``__fdividef``, ``__ldg``, ``atomicAdd`` (plain add), ``CUDART_INF(_F)``/``CUDART_NAN(_F)``,
CUDA-style ``min``/``max`` overloads (same-type int/long/long long/unsigned, float, double,
and float/double mixes; other mixes are ambiguous, as under CUDA), and the ``<cmath>``
functions (exp, log, sqrt, fabs, fmax, fmin, isfinite, isnan, log1p, expm1, pow, ...)
unqualified with their float overloads.

float16: like CuPy, ``float16`` is a small class holding a ``_Float16`` (IEEE binary16,
the same bits as numpy's float16) that converts implicitly to ``float``; arithmetic is
done in float and rounded to half on store.  ``half`` is a typedef of ``_Float16``.  Needs
a compiler with ``_Float16`` (g++ >= 12 or clang >= 15 on x86-64 / aarch64).

Limits (what this harness does *not* reproduce)
-----------------------------------------------
* Execution is sequential: element ``i`` runs before ``i + 1`` and reductions accumulate
  in C order of the reduced axes, not in CuPy's per-thread / tree order.  Results equal a
  sequential loop, so compare with tolerances; races between elements (one element
  reading what another writes through a raw array) are invisible here.
* g++ does not contract ``a * b + c`` into FMA and its expf/logf differ from CUDA's by a
  few ulp.  No complex dtypes, textures, shared memory, ``__syncthreads``, warp
  intrinsics, or ``CArray<T, ndim>`` spelled with a compile-time ndim in preambles.
* ``loop_prep`` / ``after_loop`` are pasted before / after the loop; ``options``,
  ``reduce_dims``, ``block_size`` and ``stream`` are accepted and ignored.
* Allocated outputs are pre-filled with NaN (floats) / the dtype's max (ints) / True, so
  elements a kernel forgets to write are visible (CuPy leaves them uninitialised).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

import numpy

__all__ = [
    'CompileError', 'ElementwiseKernel', 'ReductionKernel', 'available', 'calls',
    'cpu_kernels', 'elementwise', 'install', 'reduce', 'require_cxx',
]

#: Every kernel invocation, in order: dicts with keys kind, name, in_params, out_params,
#: operation, map_expr, reduce_expr, post_map_expr, identity, reduce_type, preamble,
#: kwargs, type_map ({placeholder: dtype name}), dtypes (dtype name per argument, scalars
#: as their param's dtype), ndims (None for scalars), size, axis, keepdims.
calls: list[dict] = []

CXXFLAGS = ('-std=c++17', '-O2', '-shared', '-fPIC', '-fvisibility=hidden')

# numpy dtype name -> C type name, as cupy._core._scalar.get_typename
_CTYPES = {
    'bool': 'bool', 'int8': 'signed char', 'uint8': 'unsigned char', 'int16': 'short',
    'uint16': 'unsigned short', 'int32': 'int', 'uint32': 'unsigned int',
    'int64': 'long long', 'uint64': 'unsigned long long', 'float16': 'float16',
    'float32': 'float', 'float64': 'double',
}
_NOT_C_TYPES = {name for name, ctype in _CTYPES.items() if name != ctype} | {
    'complex64', 'complex128'}

_PRELUDE = r'''
// ---- CPU stand-ins for the CUDA / CuPy kernel environment (tests/cuda_kernel_harness) ----
#include <cmath>
#include <math.h>  // libstdc++: puts the <cmath> overloads (exp(float), ...) in :: like CUDA
#include <cstddef>
#include <cstring>
#include <limits>

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define CUDART_INF_F std::numeric_limits<float>::infinity()
#define CUDART_INF std::numeric_limits<double>::infinity()
#define CUDART_NAN_F std::numeric_limits<float>::quiet_NaN()
#define CUDART_NAN std::numeric_limits<double>::quiet_NaN()

inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <typename T> inline T __ldg(const T* p) { return *p; }

#define _HARNESS_INT_MINMAX(T) \
  inline T min(T a, T b) { return a < b ? a : b; } \
  inline T max(T a, T b) { return a > b ? a : b; } \
  inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
_HARNESS_INT_MINMAX(int)
_HARNESS_INT_MINMAX(unsigned int)
_HARNESS_INT_MINMAX(long)
_HARNESS_INT_MINMAX(unsigned long)
_HARNESS_INT_MINMAX(long long)
_HARNESS_INT_MINMAX(unsigned long long)
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(double(a), b); }
inline double max(float a, double b) { return std::fmax(double(a), b); }
inline double min(double a, float b) { return std::fmin(a, double(b)); }
inline double max(double a, float b) { return std::fmax(a, double(b)); }
inline float atomicAdd(float* p, float v) { float old = *p; *p = old + v; return old; }
inline double atomicAdd(double* p, double v) { double old = *p; *p = old + v; return old; }

// CuPy's float16: storage is binary16, arithmetic goes through float.
typedef _Float16 half;
class float16 {
  _Float16 data_;
 public:
  float16() {}
  float16(float v) : data_(static_cast<_Float16>(v)) {}
  explicit float16(bool v) : data_(static_cast<_Float16>(float(v))) {}
  explicit float16(double v) : data_(static_cast<_Float16>(float(v))) {}
  explicit float16(int v) : data_(static_cast<_Float16>(float(v))) {}
  explicit float16(unsigned int v) : data_(static_cast<_Float16>(float(v))) {}
  explicit float16(long long v) : data_(static_cast<_Float16>(float(v))) {}
  explicit float16(unsigned long long v) : data_(static_cast<_Float16>(float(v))) {}
  operator float() const { return static_cast<float>(data_); }
  template <typename T> float16& operator+=(const T& r) { *this = *this + r; return *this; }
  template <typename T> float16& operator-=(const T& r) { *this = *this - r; return *this; }
  template <typename T> float16& operator*=(const T& r) { *this = *this * r; return *this; }
  template <typename T> float16& operator/=(const T& r) { *this = *this / r; return *this; }
};
inline float16 min(float16 x, float16 y) { return float16(min(float(x), float(y))); }
inline float16 max(float16 x, float16 y) { return float16(max(float(x), float(y))); }
inline float16 fmin(float16 x, float16 y) { return float16(std::fmin(float(x), float(y))); }
inline float16 fmax(float16 x, float16 y) { return float16(std::fmax(float(x), float(y))); }
inline int isnan(float16 x) { return std::isnan(float(x)); }
inline int isinf(float16 x) { return std::isinf(float(x)); }
inline int isfinite(float16 x) { return std::isfinite(float(x)); }
inline int signbit(float16 x) { return std::signbit(float(x)); }

// Index of the loop (elementwise) or of the input / output (reduction).
struct _Index { ptrdiff_t v[64]; };
class CIndexer {
  int ndim_; const ptrdiff_t* shape_; ptrdiff_t size_; _Index index_;
 public:
  explicit CIndexer(const ptrdiff_t* meta)  // meta = {ndim, shape...}
      : ndim_(int(meta[0])), shape_(meta + 1), size_(1) {
    for (int d = 0; d < ndim_; ++d) size_ *= shape_[d];
  }
  int ndim() const { return ndim_; }
  const ptrdiff_t* shape() const { return shape_; }
  ptrdiff_t size() const { return size_; }
  void set(ptrdiff_t i) {
    for (int d = ndim_ - 1; d >= 0; --d) { index_.v[d] = i % shape_[d]; i /= shape_[d]; }
  }
  const _Index& get() const { return index_; }
};

// Strided array (byte strides), indexed by C-order linear index or by a CIndexer index.
template <typename T, int _ndim = -1, bool _c_contiguous = false, bool _use_32bit = false>
class CArray {
  T* data_; int ndim_; ptrdiff_t size_; const ptrdiff_t* shape_; const ptrdiff_t* strides_;
 public:
  CArray(void* data, const ptrdiff_t* meta)  // meta = {ndim, shape..., strides...}
      : data_(static_cast<T*>(data)), ndim_(int(meta[0])), size_(1), shape_(meta + 1),
        strides_(meta + 1 + meta[0]) {
    for (int d = 0; d < ndim_; ++d) size_ *= shape_[d];
  }
  ptrdiff_t size() const { return size_; }
  const ptrdiff_t* shape() const { return shape_; }
  const ptrdiff_t* strides() const { return strides_; }
  T* data() const { return data_; }
  const T& operator[](ptrdiff_t i) const {
    const char* p = reinterpret_cast<const char*>(data_);
    for (int d = ndim_ - 1; d > 0; --d) { p += strides_[d] * (i % shape_[d]); i /= shape_[d]; }
    if (ndim_ > 0) p += strides_[0] * i;
    return *reinterpret_cast<const T*>(p);
  }
  const T& operator[](const _Index& idx) const {
    const char* p = reinterpret_cast<const char*>(data_);
    for (int d = 0; d < ndim_; ++d) p += strides_[d] * idx.v[d];
    return *reinterpret_cast<const T*>(p);
  }
  T& operator[](ptrdiff_t i) { return const_cast<T&>(static_cast<const CArray&>(*this)[i]); }
  T& operator[](const _Index& i) { return const_cast<T&>(static_cast<const CArray&>(*this)[i]); }
};
// ---- end of prelude ----
'''

_ELEMENTWISE = '''{prelude}
{typedefs}
{preamble}

extern "C" __attribute__((visibility("default")))
void {name}(void* const* _data, const ptrdiff_t* const* _meta) {{
{params}
  CIndexer _ind(_meta[{nargs}]);
  {loop_prep};
  for (ptrdiff_t i = 0; i < _ind.size(); ++i) {{
    _ind.set(i);
{bind}
    {operation};
  }}
  {after_loop};
}}
'''

_REDUCTION = '''{prelude}
{typedefs}
{preamble}
#define REDUCE(a, b) ({reduce_expr})
#define POST_MAP(a) ({post_map_expr})
typedef {reduce_type} _type_reduce;

extern "C" __attribute__((visibility("default")))
void {name}(void* const* _data, const ptrdiff_t* const* _meta) {{
{params}
  CIndexer _in_ind(_meta[{nargs}]);   // shape: output axes, then reduced axes
  CIndexer _out_ind(_meta[{nargs} + 1]);
  ptrdiff_t _n_reduced = 1;
  for (int _d = _out_ind.ndim(); _d < _in_ind.ndim(); ++_d) _n_reduced *= _in_ind.shape()[_d];
  for (ptrdiff_t _i = 0; _i < _out_ind.size(); ++_i) {{
    _type_reduce _s = _type_reduce({identity});
    for (ptrdiff_t _j = 0; _j < _n_reduced; ++_j) {{
      _in_ind.set(_i * _n_reduced + _j);
{bind_in}
      _type_reduce _a = static_cast<_type_reduce>({map_expr});
      _s = REDUCE(_s, _a);
    }}
    _out_ind.set(_i);
{bind_out}
    POST_MAP(_s);
  }}
}}
'''


class CompileError(RuntimeError):
    """The C++ compiler rejected a generated kernel; the message shows source and errors."""


# ---------------------------------------------------------------------------------------
# compiler
# ---------------------------------------------------------------------------------------

_lock = threading.RLock()
_libraries: dict[str, ctypes.CDLL] = {}


def _compiler() -> str:
    return os.environ.get('CXX') or 'g++'


def available() -> bool:
    """Whether a C++ compiler (``$CXX`` or ``g++``) is on PATH."""
    return shutil.which(_compiler()) is not None


def require_cxx() -> None:
    """For tests: skip without a compiler, or fail if ``MIXNORM_REQUIRE_CXX=1``."""
    import pytest

    if available():
        return
    message = f'no C++ compiler ({_compiler()!r}) to run CUDA kernels on the CPU'
    if os.environ.get('MIXNORM_REQUIRE_CXX') == '1':
        pytest.fail(message + ' but MIXNORM_REQUIRE_CXX=1')
    pytest.skip(message)


def _cache_dir() -> str:
    path = os.environ.get('MIXNORM_CPU_KERNEL_CACHE') or os.path.join(
        tempfile.gettempdir(), 'mixnorm-cpu-kernels-%d' % os.getuid())
    os.makedirs(path, exist_ok=True)
    return path


_compiler_ids: dict[str, str] = {}


def _compiler_id() -> str:
    cxx = _compiler()
    if cxx not in _compiler_ids:
        out = subprocess.run([cxx, '--version'], capture_output=True, text=True)
        _compiler_ids[cxx] = cxx + '\n' + out.stdout
    return _compiler_ids[cxx]


def _numbered(source: str) -> str:
    """Source with line numbers; the (long, fixed) prelude is collapsed to one line."""
    lines = source.splitlines()
    skip = next((n for n, line in enumerate(lines) if 'end of prelude' in line), -1) + 1
    head = ['   1-%d  (prelude: cuda_kernel_harness._PRELUDE)' % skip] if skip else []
    return '\n'.join(head + ['%4d  %s' % (n, line)
                              for n, line in enumerate(lines[skip:], skip + 1)])


def _load(source: str, name: str):
    """Compile ``source`` (once per process and disk cache) and return its function."""
    key = hashlib.sha256(
        '\0'.join((_compiler_id(), ' '.join(CXXFLAGS), source)).encode()).hexdigest()[:32]
    with _lock:
        lib = _libraries.get(key)
        if lib is None:
            so_path = os.path.join(_cache_dir(), key + '.so')
            if not os.path.exists(so_path):
                _compile(source, name, so_path)
            lib = _libraries[key] = ctypes.CDLL(so_path)
    fn = getattr(lib, name)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    return fn


def _compile(source: str, name: str, so_path: str) -> None:
    with tempfile.TemporaryDirectory(prefix='mixnorm-kernel-') as tmp:
        cpp = os.path.join(tmp, name + '.cpp')
        with open(cpp, 'w') as f:
            f.write(source)
        tmp_so = os.path.join(tmp, 'kernel.so')
        proc = subprocess.run([_compiler(), *CXXFLAGS, cpp, '-o', tmp_so],
                              capture_output=True, text=True,
                              env={**os.environ, 'LC_ALL': 'C'})  # plain-ASCII messages
        if proc.returncode != 0:
            raise CompileError(
                f'C++ compilation of kernel {name!r} failed.\n'
                f'--- compiler output ---\n{proc.stderr}\n'
                f'--- generated source ---\n{_numbered(source)}')
        # Copy next to the target and rename atomically: other processes share the cache.
        partial = f'{so_path}.{os.getpid()}.tmp'
        shutil.copyfile(tmp_so, partial)
        os.replace(partial, so_path)


# ---------------------------------------------------------------------------------------
# params and types
# ---------------------------------------------------------------------------------------

class _Param:
    def __init__(self, text: str, is_const: bool):
        words = text.split()
        if len(words) < 2:
            raise ValueError(f'Syntax error in param {text!r}')
        *modifiers, typ, self.name = words
        self.raw = False
        self.is_const = is_const
        for m in modifiers:
            if m != 'raw':
                raise ValueError(f'Unknown keyword {m!r} in param {text!r}')
            self.raw = True
        if len(typ) == 1:  # CuPy: every one-character type is a placeholder
            self.dtype, self.ctype = None, typ
        else:
            try:
                dtype = numpy.dtype(typ)
            except TypeError:
                dtype = None
            if dtype is None or dtype.name != typ or typ not in _CTYPES:
                raise ValueError(f'Wrong type {typ!r} in param {text!r}')
            self.dtype, self.ctype = dtype, _CTYPES[typ]
        if not self.name.isidentifier() or self.name.startswith('_'):
            raise ValueError(f'Invalid or reserved param name {self.name!r}')

    def __repr__(self):
        return f'<{"raw " if self.raw else ""}{self.ctype} {self.name}>'


def _parse_params(text: str, is_const: bool) -> tuple[_Param, ...]:
    text = text.strip()
    return tuple(_Param(p, is_const) for p in text.split(',')) if text else ()


def _decide_types(in_params, out_params, in_dtypes, out_dtypes):
    """CuPy's ``_decide_params_type_core``: ``*_dtypes`` hold an array's dtype or None."""
    bound: dict[str, numpy.dtype] = {}

    def bind(p, dtype):
        if dtype is None:
            return
        if p.dtype is not None:
            if dtype != p.dtype:
                raise TypeError(f'Type is mismatched. {p.name} {dtype} {p.dtype}')
        elif p.ctype in bound:
            if dtype != bound[p.ctype]:
                raise TypeError(
                    f'Type is mismatched. {p.name} {dtype} {bound[p.ctype]} {p.ctype}')
        else:
            bound[p.ctype] = dtype

    for p, dtype in zip(out_params, out_dtypes):
        if dtype is None:
            raise TypeError('Output arguments must be numpy.ndarray')
        bind(p, dtype)
    for p, dtype in zip(in_params, in_dtypes):
        bind(p, dtype)

    def resolve(p):
        if p.dtype is not None:
            return p.dtype
        if p.ctype not in bound:
            raise TypeError(f'Type placeholder {p.ctype!r} of param {p.name!r} is not bound '
                            'by any array argument (scalars do not bind placeholders)')
        return bound[p.ctype]

    return ([resolve(p) for p in in_params], [resolve(p) for p in out_params],
            dict(sorted(bound.items())))


def _is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, numpy.generic))


def _meta(a: numpy.ndarray) -> numpy.ndarray:
    return numpy.array([a.ndim, *a.shape, *a.strides], dtype=numpy.intp)


def _prefill(out: numpy.ndarray) -> numpy.ndarray:
    if out.dtype.kind == 'f':
        out.fill(numpy.nan)
    elif out.dtype.kind in 'iu':
        out.fill(numpy.iinfo(out.dtype).max)
    else:
        out.fill(True)
    return out


def _run(fn, arrays, metas) -> None:
    data = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    meta = (ctypes.c_void_p * len(metas))(*[m.ctypes.data for m in metas])
    fn(ctypes.addressof(data), ctypes.addressof(meta))


# ---------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------

class _Kernel:
    kind = ''

    def __init__(self, in_params, out_params, name, preamble, kwargs):
        if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', name or ''):
            raise ValueError(f'Invalid kernel name: {name!r}')
        self.in_params = _parse_params(in_params, True)
        self.out_params = _parse_params(out_params, False)
        self.params = self.in_params + self.out_params
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f'Duplicated param name in {names}')
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.name, self.preamble, self.kwargs = name, preamble, dict(kwargs)
        self.definition = {'in_params': in_params, 'out_params': out_params, 'name': name}
        self._sources: dict[tuple, str] = {}

    def _declare(self, dtypes) -> str:
        """C declarations of the kernel arguments ``_data[k]``, ``_meta[k]``."""
        lines = []
        for k, (p, dtype) in enumerate(zip(self.params, dtypes)):
            const = 'const ' if p.is_const else ''
            if dtype is None:  # scalar argument: a kernel parameter by value
                lines.append(f'  {const}{p.ctype} {p.name} = '
                             f'*static_cast<const {p.ctype}*>(_data[{k}]);')
            else:
                var = p.name if p.raw else '_raw_' + p.name
                lines.append(f'  {const}CArray<{p.ctype}> {var}(_data[{k}], _meta[{k}]);')
        return '\n'.join(lines)

    @staticmethod
    def _typedefs(type_map) -> str:
        return ''.join(f'typedef {_CTYPES[d.name]} {t};\n' for t, d in type_map.items())

    def _record(self, given, args, type_map, **extra) -> None:
        """``given``: the arguments as passed, ``args``: as passed to C (scalars as 0-d)."""
        calls.append({
            'kind': self.kind, **self.definition, 'preamble': self.preamble,
            'kwargs': dict(self.kwargs),
            'type_map': {t: d.name for t, d in type_map.items()},
            'dtypes': tuple(a.dtype.name for a in args),
            'ndims': tuple(None if _is_scalar(a) else a.ndim for a in given),
            **extra})

    def _split_args(self, args):
        if len(args) not in (self.nin, self.nin + self.nout):
            raise TypeError(f'Wrong number of arguments for {self.name!r}: it must be either '
                            f'{self.nin} or {self.nin + self.nout}, but given {len(args)}')
        for a in args:
            if not (isinstance(a, numpy.ndarray) or _is_scalar(a)):
                raise TypeError(f'Unsupported argument type {type(a)} for {self.name!r}')
        return list(args[:self.nin]), list(args[self.nin:])


class ElementwiseKernel(_Kernel):
    """CPU version of ``cupy.ElementwiseKernel`` (see the module docstring)."""

    kind = 'elementwise'

    def __init__(self, in_params, out_params, operation, name='kernel', preamble='',
                 no_return=False, return_tuple=False, loop_prep='', after_loop='',
                 **kwargs):
        super().__init__(in_params, out_params, name, preamble, kwargs)
        if 'i' in [p.name for p in self.params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation = operation
        self.no_return, self.return_tuple = no_return, return_tuple
        self.loop_prep, self.after_loop = loop_prep, after_loop
        self.definition.update(operation=operation, map_expr=None, reduce_expr=None,
                               post_map_expr=None, identity=None, reduce_type=None)

    def __call__(self, *args, size=None, stream=None, block_size=None):
        in_args, out_args = self._split_args(args)
        arrays = [a for a, p in zip(args, self.params)
                  if not p.raw and isinstance(a, numpy.ndarray)]
        if size is not None:
            if arrays:
                raise ValueError("Specified 'size' can be used only if all of the ndarray "
                                 "are 'raw'.")
            shape = (int(size),)
        elif not arrays:
            raise ValueError('Loop size is undecided.')
        else:
            shape = numpy.broadcast_shapes(*(a.shape for a in arrays))
        in_types, out_types, type_map = _decide_types(
            self.in_params, self.out_params,
            [a.dtype if isinstance(a, numpy.ndarray) else None for a in in_args],
            [a.dtype if isinstance(a, numpy.ndarray) else None for a in out_args])

        if not out_args:
            if size is None and any(p.raw for p in self.out_params):
                raise ValueError('Output array size is Undecided')
            out_args = [_prefill(numpy.empty(shape, t)) for t in out_types]
        for a, p in zip(out_args, self.out_params):
            if not p.raw and a.shape != shape:
                raise ValueError(f'Out shape is mismatched: {a.shape} != {shape}')
        if self.no_return:
            ret = None
        elif self.nout == 1 and not self.return_tuple:
            ret = out_args[0]
        else:
            ret = tuple(out_args)

        # Scalars become 0-d arrays of their param's type; non-raw inputs are broadcast.
        dtypes = [a.dtype if isinstance(a, numpy.ndarray) else None for a in in_args]
        dtypes += [a.dtype for a in out_args]
        inout = []
        for a, p, t in zip(in_args + out_args, self.params, in_types + out_types):
            if _is_scalar(a):
                a = numpy.array(a, dtype=t)
            elif not p.raw and p.is_const:
                a = numpy.broadcast_to(a, shape)
            inout.append(a)
        self._record(in_args + out_args, inout, type_map, size=size, axis=None,
                     keepdims=None)
        if 0 in shape:
            return ret

        fn = _load(self._source(inout, dtypes, type_map), self.name)
        loop = numpy.array([len(shape), *shape], dtype=numpy.intp)
        _run(fn, inout, [_meta(a) for a in inout] + [loop])
        return ret

    def _source(self, args, dtypes, type_map) -> str:
        key = (tuple(d is None for d in dtypes), tuple(type_map.items()))
        if key not in self._sources:
            bind = []
            for p, d in zip(self.params, dtypes):
                if d is not None and not p.raw:
                    const = 'const ' if p.is_const else ''
                    bind.append(f'    {const}{p.ctype} &{p.name} = _raw_{p.name}[_ind.get()];')
            self._sources[key] = _ELEMENTWISE.format(
                prelude=_PRELUDE, typedefs=self._typedefs(type_map), preamble=self.preamble,
                name=self.name, params=self._declare(dtypes), nargs=len(args),
                loop_prep=self.loop_prep, after_loop=self.after_loop, bind='\n'.join(bind),
                operation=self.operation)
        return self._sources[key]


class ReductionKernel(_Kernel):
    """CPU version of ``cupy.ReductionKernel`` (see the module docstring)."""

    kind = 'reduction'

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr,
                 identity, name='reduce_kernel', reduce_type=None, preamble='', **kwargs):
        super().__init__(in_params, out_params, name, preamble, kwargs)
        if reduce_type is None:
            reduce_type = self.out_params[0].ctype
        if reduce_type.strip() in _NOT_C_TYPES:
            c_name = _CTYPES.get(reduce_type.strip(), 'a C type')
            raise ValueError(
                f'reduce_type {reduce_type!r} of {name!r}: CuPy pastes reduce_type into the '
                f'C source verbatim, so it must be a C type or placeholder (use {c_name!r})')
        self.map_expr, self.reduce_expr, self.post_map_expr = (
            map_expr, reduce_expr, post_map_expr)
        self.identity = '' if identity is None else str(identity)
        self.reduce_type = reduce_type
        self.definition.update(operation=None, map_expr=map_expr, reduce_expr=reduce_expr,
                               post_map_expr=post_map_expr, identity=identity,
                               reduce_type=reduce_type)

    def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None):
        in_args, out_args = self._split_args(args)
        if out is not None:
            if self.nout != 1:
                raise NotImplementedError('out= needs exactly one output param')
            if out_args:
                raise ValueError("cannot specify 'out' as both a positional and keyword "
                                 'argument')
            out_args = [out]
        arrays = [a for a, p in zip(in_args, self.in_params)
                  if not p.raw and isinstance(a, numpy.ndarray)]
        if not arrays:
            raise ValueError('Loop size is undecided.')
        shape = numpy.broadcast_shapes(*(a.shape for a in arrays))
        in_types, out_types, type_map = _decide_types(
            self.in_params, self.out_params,
            [a.dtype if isinstance(a, numpy.ndarray) else None for a in in_args],
            [a.dtype if isinstance(a, numpy.ndarray) else None for a in out_args])

        ndim = len(shape)
        if axis is None:
            axis = tuple(range(ndim))
        elif not isinstance(axis, (tuple, list)):
            axis = (axis,)
        if any(not -ndim <= d < ndim for d in axis):
            raise ValueError(f'axis {axis} is out of bounds for {ndim} dimensions')
        reduce_axes = tuple(sorted(d % ndim for d in axis))
        if len(set(reduce_axes)) != len(reduce_axes):
            raise ValueError("duplicate value in 'axis'")
        out_axes = tuple(d for d in range(ndim) if d not in reduce_axes)
        out_shape = (tuple(1 if d in reduce_axes else n for d, n in enumerate(shape))
                     if keepdims else tuple(shape[d] for d in out_axes))

        if not out_args:
            out_args = [_prefill(numpy.empty(out_shape, t)) for t in out_types]
        for a, p in zip(out_args, self.out_params):
            if not p.raw and a.shape != out_shape:
                raise ValueError(f'Out shape is mismatched: {a.shape} != {out_shape}')
        ret = out_args[0]  # CuPy's ReductionKernel returns the first output only

        permuted = reduce_axes + out_axes != tuple(range(ndim))
        if permuted and any(p.raw for p in self.in_params):
            raise NotImplementedError('Illegal conditions')  # CuPy's message
        dtypes = [a.dtype if isinstance(a, numpy.ndarray) else None for a in in_args]
        dtypes += [a.dtype for a in out_args]
        inout = []
        for a, p, t in zip(in_args, self.in_params, in_types):
            if _is_scalar(a):
                a = numpy.array(a, dtype=t)
            elif not p.raw:  # loop order: output axes, then reduced axes
                a = numpy.broadcast_to(a, shape).transpose(out_axes + reduce_axes)
            inout.append(a)
        for a, p in zip(out_args, self.out_params):
            inout.append(a.squeeze(reduce_axes) if keepdims and not p.raw else a)
        self._record(in_args + out_args, inout, type_map, size=None, axis=reduce_axes,
                     keepdims=keepdims)
        if ret.size == 0:
            return ret
        if not self.identity and 0 in shape:
            raise ValueError(f'zero-size array to reduction operation {self.name} which has '
                             'no identity')

        fn = _load(self._source(inout, dtypes, type_map), self.name)
        in_ind = numpy.array([ndim, *(shape[d] for d in out_axes + reduce_axes)],
                             dtype=numpy.intp)
        out_ind = numpy.array([len(out_axes), *(shape[d] for d in out_axes)],
                              dtype=numpy.intp)
        _run(fn, inout, [_meta(a) for a in inout] + [in_ind, out_ind])
        return ret

    def _source(self, args, dtypes, type_map) -> str:
        key = (tuple(d is None for d in dtypes), tuple(type_map.items()))
        if key not in self._sources:
            bind_in, bind_out = [], []
            for p, d in zip(self.in_params, dtypes):
                if d is not None and not p.raw:
                    bind_in.append(f'      const {p.ctype} {p.name} = '
                                   f'_raw_{p.name}[_in_ind.get()];')
            for p in self.out_params:
                if not p.raw:
                    bind_out.append(f'    {p.ctype} &{p.name} = _raw_{p.name}[_out_ind.get()];')
            self._sources[key] = _REDUCTION.format(
                prelude=_PRELUDE, typedefs=self._typedefs(type_map), preamble=self.preamble,
                name=self.name, params=self._declare(dtypes), nargs=len(args),
                reduce_expr=self.reduce_expr, post_map_expr=self.post_map_expr,
                reduce_type=self.reduce_type, identity=self.identity,
                bind_in='\n'.join(bind_in), bind_out='\n'.join(bind_out),
                map_expr=self.map_expr)
        return self._sources[key]


# ---------------------------------------------------------------------------------------
# chainer.backends.cuda replacements
# ---------------------------------------------------------------------------------------

_kernels: dict = {}


def _memoized(cls, args, kwargs):
    key = (cls, args, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _lock:
        if key not in _kernels:
            _kernels[key] = cls(*args, **kwargs)
        return _kernels[key]


def elementwise(in_params, out_params, operation, name, **kwargs):
    """CPU replacement of ``chainer.backends.cuda.elementwise`` (memoized)."""
    return _memoized(ElementwiseKernel, (in_params, out_params, operation, name), kwargs)


def reduce(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name,
           **kwargs):
    """CPU replacement of ``chainer.backends.cuda.reduce`` (memoized)."""
    return _memoized(ReductionKernel, (in_params, out_params, map_expr, reduce_expr,
                                       post_map_expr, identity, name), kwargs)


@contextlib.contextmanager
def cpu_kernels():
    """Patch ``chainer.backends.cuda.elementwise`` / ``.reduce`` with the CPU versions."""
    from chainer.backends import cuda

    saved = cuda.elementwise, cuda.reduce
    cuda.elementwise, cuda.reduce = elementwise, reduce
    try:
        yield
    finally:
        cuda.elementwise, cuda.reduce = saved


def install(monkeypatch) -> None:
    """Same patch through a pytest ``monkeypatch`` fixture (undone at test teardown)."""
    from chainer.backends import cuda

    monkeypatch.setattr(cuda, 'elementwise', elementwise)
    monkeypatch.setattr(cuda, 'reduce', reduce)


def use_for_numpy(monkeypatch):
    """The project's kernels compiled for the CPU and used for numpy arrays while
    ``chainer.config.mixnorm_kernels`` is True (skipped without g++, failed instead when
    MIXNORM_REQUIRE_CXX=1, as in CI); the record of kernel calls starts empty."""
    import chainer

    from mixnorm_chainer import kernels

    require_cxx()
    install(monkeypatch)
    monkeypatch.setattr(kernels, 'enabled',
                        lambda *arrays: bool(getattr(chainer.config, 'mixnorm_kernels', True)))
    del calls[:]


def both(fn):
    """``(fn() with the kernels, fn() with the xp path)``."""
    import chainer

    with chainer.using_config('mixnorm_kernels', True):
        ours = fn()
    with chainer.using_config('mixnorm_kernels', False):
        reference = fn()
    return ours, reference
