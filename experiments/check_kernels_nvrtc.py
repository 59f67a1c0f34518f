"""Compile every CUDA kernel the package builds with NVRTC, without a GPU.

Run by ``make check-kernels-nvrtc`` in its own venv (Python 3.12, numpy 2, cupy-cuda13x 14 and
the NVRTC wheel; see requirements/nvrtc-cuda13.txt). Not part of CI (large downloads).

1. Imports the package and checks the CuPy adaptation of ``mixnorm_chainer._compat``: with a
   cupy >= 14 (no cuDNN) it sets ``CHAINER_CUDNN=0`` and lists it in ``_compat.applied``, and
   chainer's "cuDNN is not enabled" warning does not appear.
2. Collects the kernel definitions: three sample kernels of this script (an elementwise kernel
   with raw parameters and a preamble, a reduction broadcasting over axes (0, 2), one with two
   outputs and a fixed-dtype scalar) and every kernel the package builds (those of
   ``mixnorm_chainer/kernels/__init__.py`` and the per-set fit's of ``kernels/group.py``; the
   self-check runs each), recorded by the CPU kernel harness (``tests/cuda_kernel_harness.py``)
   while ``mixnorm_chainer.kernels.self_check.check`` runs on numpy (with ``kernels.enabled``
   following ``chainer.config.mixnorm_kernels`` for numpy arrays, as in tests/test_kernels.py,
   so the package's own dispatch reaches every kernel).
3. For each distinct definition and argument dtypes builds the CUDA source CuPy generates for
   it (CuPy's own code generators, ``cupy._core._kernel._get_elementwise_kernel_code`` and
   ``cupy._core._reduction._ReductionKernel_get_cached_function_code``, fed with the argument
   metadata a call would produce) and compiles it with NVRTC through
   ``cupy._core.core.compile_with_cache`` for each ``--arch`` (default sm_80 and sm_90).

Without a GPU ``compile_with_cache`` stops before compiling (a per-device memo asks the driver
for the current device), so two functions of ``cupy.cuda.compiler`` are replaced while this
runs: the arch option is computed from ``--arch`` alone, and the NVRTC call is wrapped to keep
the compiled cubin and stop before CuPy loads it onto a device. ``CUPY_CACHE_IN_MEMORY=1``
keeps CuPy's on-disk kernel cache out of it, so every kernel is really compiled.

Exit status: 0 when every kernel compiled, 1 on any compile failure (the NVRTC error is
printed), 2 when the check could not run (no cupy, no NVRTC, no harness or kernels module
unless --samples-only).
"""
import argparse
import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ARCHS = ('80', '90')
REDUCTION_BLOCK_SIZE = 512  # CuPy's default on CUDA


class CheckError(Exception):
    """The check cannot run here; the message is one line for the user."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Compile every CUDA kernel of mixnorm_chainer with NVRTC (no GPU needed). '
                    'Needs cupy (cupy-cuda13x or cupy-cuda12x) and the nvidia-cuda-nvrtc wheel of '
                    'its CUDA major: `make check-kernels-nvrtc` sets that up in .venv-nvrtc.')
    p.add_argument('--arch', action='append', metavar='CC',
                   help='compute capability to compile for, e.g. 80 (repeatable; '
                        'default: 80 and 90)')
    p.add_argument('--samples-only', action='store_true',
                   help="only this script's sample kernels (no harness / kernels module needed)")
    p.add_argument('--list', action='store_true', help='print each kernel variant compiled')
    p.add_argument('--dump', metavar='DIR',
                   help='write the CUDA source of every failing kernel into DIR')
    return p.parse_args(argv)


# -- 1. the import-level check of _compat's CuPy adaptation ----------------------------------

def check_import():
    """Import the package; return (ok, lines) about the CHAINER_CUDNN adaptation."""
    user_set = os.environ.get('CHAINER_CUDNN')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        # isort: off
        import mixnorm_chainer  # noqa: F401  (first: _compat runs before chainer)
        # isort: on
        import chainer.backends.cuda as cuda

        from mixnorm_chainer import _compat
        if cuda.available:
            cuda.check_cuda_available()  # where chainer warns about cuDNN
    cudnn_warnings = [w for w in caught if 'cudnn' in str(w.message).lower()]
    entry = [a for a in _compat.applied if a.startswith('CHAINER_CUDNN=0')]
    import cupy
    lines = [f'cupy {cupy.__version__}, chainer cuda.available={cuda.available}'
             + ('' if cuda.available else
                f' ({_one_line(getattr(cuda, "_resolution_error", "?"))})')]
    ok = True
    if user_set is not None:
        lines.append(f'CHAINER_CUDNN={user_set} was set by the user: _compat leaves it alone '
                     f'({"ok" if not entry else "WRONG: adapted anyway"})')
        ok = not entry
    else:
        expected = _compat._cupy_without_cudnn() is not None
        lines.append(f'_compat.applied lists CHAINER_CUDNN=0: {bool(entry)} '
                     f'(expected {expected}); os.environ CHAINER_CUDNN='
                     f'{os.environ.get("CHAINER_CUDNN")}')
        ok = bool(entry) == expected
    if cuda.available:
        lines.append(f'cuDNN warnings at import + check_cuda_available(): {len(cudnn_warnings)}')
        ok = ok and (user_set is not None or not cudnn_warnings)
        if user_set is None:
            lines.append('control, CHAINER_CUDNN=1 set by hand: ' + _control_run())
    else:
        lines.append('cuda.available is False, so chainer cannot reach its cuDNN warning here')
    return ok, lines


def _control_run():
    code = ('import warnings; warnings.simplefilter("always")\n'
            'import mixnorm_chainer, chainer.backends.cuda as c\n'
            'c.check_cuda_available()\n')
    env = dict(os.environ, CHAINER_CUDNN='1')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=300)
    warned = 'cuDNN is not enabled' in r.stderr
    return f'chainer warns "cuDNN is not enabled": {warned}'


def _one_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# -- 2. kernel definitions ---------------------------------------------------------------------

SAMPLE_PREAMBLE = '''
template <typename U> __device__ U mn_scale(U d, U inv_std) { return d * inv_std; }
'''


def sample_calls():
    """Three kernels in the harness's record format (see tests/cuda_kernel_harness.py)."""
    calls = []
    for dt in ('float32', 'float64'):
        calls.append(dict(
            name='sample_normalize_raw', kind='elementwise',
            in_params='T x, raw T means, raw T inv_std, int32 C, int32 S',
            out_params='T y',
            operation='const int c = (i / S) % C; y = mn_scale(x - means[c], inv_std[c]);',
            preamble=SAMPLE_PREAMBLE,
            dtypes=[dt, dt, dt, 'int32', 'int32'], ndims=[3, 1, 1, None, None]))
        calls.append(dict(
            name='sample_weighted_sum_02', kind='reduction',
            in_params='T x, T w', out_params='T y',
            map_expr='x * w', reduce_expr='a + b', post_map_expr='y = a', identity='0',
            reduce_type=None, preamble='',
            dtypes=[dt, dt], ndims=[3, 3], axis=(0, 2)))
        calls.append(dict(
            name='sample_two_outputs', kind='elementwise',
            in_params='T x, float32 eps', out_params='T y, T z',
            operation='y = x * x + eps; z = rsqrt(y);', preamble='',
            dtypes=[dt, 'float32'], ndims=[2, None]))
    return calls


def package_calls():
    """Every kernel call ``self_check.check(numpy)`` makes, recorded by the CPU harness."""
    missing = [p for p in ('tests/cuda_kernel_harness.py', 'mixnorm_chainer/kernels/')
               if not os.path.exists(os.path.join(ROOT, p))]
    if missing:
        raise CheckError(f'{", ".join(missing)} not present: cannot collect the package '
                         'kernels (--samples-only checks the sample kernels alone)')
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    try:
        harness = importlib.import_module('cuda_kernel_harness')
    finally:
        sys.path.remove(os.path.join(ROOT, 'tests'))
    import chainer
    import numpy

    from mixnorm_chainer import kernels
    from mixnorm_chainer.kernels import self_check

    # As tests/test_kernels.py does: the kernels also serve numpy arrays while
    # chainer.config.mixnorm_kernels is True, so self_check runs every kernel on the CPU.
    saved_enabled = kernels.enabled
    kernels.enabled = lambda *arrays: bool(getattr(chainer.config, 'mixnorm_kernels', True))
    if not harness.available():  # the harness compiles the kernel strings with g++ ($CXX)
        raise CheckError(f'no C++ compiler ({harness._compiler()!r}) for the CPU kernel harness')
    del harness.calls[:]
    try:
        with harness.cpu_kernels():
            errors = self_check.check(numpy)
    except Exception as e:  # noqa: BLE001 (no g++, a kernel failing on the CPU, ...)
        raise CheckError(f'self_check.check(numpy) under the CPU harness failed: '
                         f'{type(e).__name__}: {_one_line(e)}') from None
    finally:
        kernels.enabled = saved_enabled
    return list(harness.calls), errors


def _field(call, name, default=None):
    if isinstance(call, dict):
        return call.get(name, default)
    return getattr(call, name, default)


# -- 3. CuPy's generated source for one call --------------------------------------------------

def kernel_variants(call):
    """[(label, source, options)] for one recorded call: CuPy's CUDA source per layout."""
    import numpy
    kind = _field(call, 'kind')
    dtypes = [None if d is None else numpy.dtype(d) for d in _field(call, 'dtypes', [])]
    ndims = list(_field(call, 'ndims', [None] * len(dtypes)))
    ndims += [-1] * (len(dtypes) - len(ndims))  # outputs the kernel allocated: arrays
    if kind == 'elementwise':
        return _elementwise_variants(call, dtypes, ndims)
    if kind == 'reduction':
        return _reduction_variants(call, dtypes, ndims)
    raise CheckError(f'unknown kernel kind {kind!r} in a harness record')


def _kwargs(call, names):
    extra = dict(_field(call, 'kwargs', None) or {})
    for n in names:
        v = _field(call, n)
        if v is not None:
            extra[n] = v
    return extra


def _arg_is_array(param, dtype, ndim):
    """Scalars are recorded with ndim None (a 0-d array has ndim 0 and stays an array)."""
    return param.raw or (dtype is not None and ndim is not None)


def _elementwise_variants(call, dtypes, ndims):
    import cupy
    import numpy
    from cupy._core import _carray, _kernel, _scalar
    extra = _kwargs(call, ('preamble', 'loop_prep', 'after_loop', 'options'))
    extra.pop('reduce_dims', None)
    options = tuple(extra.pop('options', ()) or ())
    k = cupy.ElementwiseKernel(_field(call, 'in_params'), _field(call, 'out_params'),
                               _field(call, 'operation'), _field(call, 'name'), **extra)
    params = k.params
    nin, nout = k.nin, k.nout
    is_array = [_arg_is_array(p, d, n) for p, d, n in zip(params, dtypes, ndims)]
    in_types_given = tuple(d if a else None for d, a in zip(dtypes[:nin], is_array[:nin]))
    out_given = tuple(dtypes[nin:nin + nout])
    in_types, out_types, type_map = k._decide_params_type(in_types_given, out_given)
    full_ndim = max([n for p, n, a in zip(params[:nin + nout], ndims, is_array)
                     if a and not p.raw and n and n > 0] or [1])
    variants = []
    for layout, ndim, contiguous in (('contiguous', 1, True), ('strided', full_ndim, False)):
        infos = []
        for j, p in enumerate(params[:nin + nout]):
            dt = numpy.dtype(in_types[j] if j < nin else out_types[j - nin])
            given = ndims[j] if j < len(ndims) else None
            if j >= nin or (j < len(is_array) and is_array[j]):
                nd = (given if given and given > 0 else 1) if p.raw else ndim
                infos.append(_kernel._ArgInfo(1, cupy.ndarray, dt, nd,
                                              contiguous or p.raw, True))
            else:
                infos.append(_kernel._ArgInfo(3, _scalar.CScalar, dt, 0, True, True))
        infos.append(_kernel._ArgInfo(2, _carray.Indexer, None, ndim, True, True))
        kw = {n: extra[n] for n in ('loop_prep', 'after_loop') if n in extra}
        code = _kernel._get_elementwise_kernel_code(
            tuple(infos), type_map, params, k.operation, k.name, k.preamble, **kw)
        variants.append((layout, code, options))
    return variants


def _reduction_variants(call, dtypes, ndims):
    import cupy
    import numpy
    from cupy._core import _carray, _kernel, _reduction, _scalar
    extra = _kwargs(call, ('reduce_type', 'preamble', 'options'))
    extra.pop('reduce_dims', None)
    r = cupy.ReductionKernel(_field(call, 'in_params'), _field(call, 'out_params'),
                             _field(call, 'map_expr'), _field(call, 'reduce_expr'),
                             _field(call, 'post_map_expr'), _field(call, 'identity'),
                             _field(call, 'name'), **extra)
    nin, nout = r.nin, r.nout
    params = r._params
    is_array = [_arg_is_array(p, d, n) for p, d, n in zip(params, dtypes, ndims)]
    in_given = tuple(d.type if (d is not None and a) else None
                     for d, a in zip(dtypes[:nin], is_array[:nin]))
    out_given = tuple(d.type for d in dtypes[nin:nin + nout] if d is not None)
    in_types, out_types, type_map = _kernel._decide_params_type(
        r.in_params, r.out_params, in_given, out_given)
    type_map = _kernel._TypeMap(type_map._pairs + (('IndexT', numpy.int32),))
    in_ndim = max([n for p, n, a in zip(params[:nin], ndims, is_array)
                   if a and not p.raw and n and n > 0] or [1])
    axis = _field(call, 'axis')
    axes = range(in_ndim) if axis is None else (axis if hasattr(axis, '__len__') else (axis,))
    axes = {a % in_ndim for a in axes}
    out_ndim = in_ndim if _field(call, 'keepdims') else in_ndim - len(axes)
    infos = []
    for j in range(nin):
        p, dt = params[j], numpy.dtype(in_types[j])
        if j < len(is_array) and is_array[j]:
            nd = (ndims[j] if ndims[j] and ndims[j] > 0 else 1) if p.raw else in_ndim
            infos.append(_kernel._ArgInfo(1, cupy.ndarray, dt, nd, bool(p.raw), True))
        else:
            infos.append(_kernel._ArgInfo(3, _scalar.CScalar, dt, 0, True, True))
    for j in range(nout):
        infos.append(_kernel._ArgInfo(1, cupy.ndarray, numpy.dtype(out_types[j]), out_ndim,
                                      True, True))
    infos += [_kernel._ArgInfo(2, _carray.Indexer, None, in_ndim, True, True),
              _kernel._ArgInfo(2, _carray.Indexer, None, out_ndim, True, True),
              _kernel._ArgInfo(3, _scalar.CScalar, numpy.dtype(numpy.int32), 0, True, True)]
    options = tuple(r.options or ())
    code = _reduction._ReductionKernel_get_cached_function_code(
        nin, nout, params, tuple(infos), type_map, r.name, REDUCTION_BLOCK_SIZE,
        r.reduce_type, r.identity, r.map_expr, r.reduce_expr, r.post_map_expr, r.preamble,
        options)
    return [(f'axes {tuple(sorted(axes))} of {in_ndim}', code, options)]


# -- compiling without a device ---------------------------------------------------------------

class _Compiled(Exception):
    """Raised by the NVRTC wrapper once the cubin exists, before CuPy loads it."""


@contextlib.contextmanager
def nvrtc_without_device():
    """Let ``compile_with_cache(code, options, arch=...)`` compile with NVRTC, no device."""
    from cupy.cuda import compiler
    saved = compiler._get_arch_for_options_for_nvrtc, compiler._compile_using_nvrtc_no_warning
    nvrtc = saved[1]

    def arch_options(arch=None):  # compiler.py's logic, minus the per-device memo
        if not compiler._use_ptx and int(arch) <= int(compiler._get_max_compute_capability()):
            return f'-arch=sm_{arch}', 'cubin'
        return f'-arch=compute_{arch}', 'ptx'

    def compile_and_stop(source, *args, **kwargs):
        result = nvrtc(source, *args, **kwargs)
        if source == '':  # CuPy's compiler-version probe on an empty file
            return result
        raise _Compiled(len(result[0]))

    old_cache = os.environ.get('CUPY_CACHE_IN_MEMORY')
    os.environ['CUPY_CACHE_IN_MEMORY'] = '1'
    compiler._get_arch_for_options_for_nvrtc = arch_options
    compiler._compile_using_nvrtc_no_warning = compile_and_stop
    try:
        yield
    finally:
        compiler._get_arch_for_options_for_nvrtc, compiler._compile_using_nvrtc_no_warning = saved
        if old_cache is None:
            os.environ.pop('CUPY_CACHE_IN_MEMORY', None)
        else:
            os.environ['CUPY_CACHE_IN_MEMORY'] = old_cache


def compile_one(code, options, arch):
    """None when NVRTC compiled ``code`` for ``arch``, else the NVRTC error text."""
    from cupy._core.core import compile_with_cache
    from cupy.cuda import compiler
    try:
        compile_with_cache(code, options, arch=arch)
    except _Compiled:
        return None
    except compiler.CompileException as e:
        return str(e).strip()
    raise CheckError('compile_with_cache returned without compiling (cupy changed?)')


def nvrtc_version():
    try:
        from cupy.cuda import compiler
        return '.'.join(map(str, compiler._get_nvrtc_version()))
    except Exception as e:
        major = _cupy_cuda_major()
        wheel = 'nvidia-cuda-nvrtc' if major == '13' else f'nvidia-cuda-nvrtc-cu{major}'
        raise CheckError(f'NVRTC not loadable ({_one_line(e)}); pip install {wheel}') from None


def _cupy_cuda_major():
    from importlib import metadata
    for major in ('13', '12'):
        with contextlib.suppress(metadata.PackageNotFoundError):
            metadata.version(f'cupy-cuda{major}x')
            return major
    return '13'


def first_error_lines(text, n=3):
    lines = [ln for ln in text.splitlines() if 'error' in ln.lower()] or text.splitlines()
    return ' | '.join(ln.strip() for ln in lines[:n])


def signature(call):
    return ','.join(str(d) for d in (_field(call, 'dtypes') or []))


def run(args):
    archs = tuple(args.arch or DEFAULT_ARCHS)
    if importlib.util.find_spec('cupy') is None:
        raise CheckError('needs cupy: `make check-kernels-nvrtc` builds .venv-nvrtc with '
                         'cupy-cuda13x and the NVRTC wheel')
    ok_import, lines = check_import()
    print('[1] import-level check of _compat (CHAINER_CUDNN):', 'ok' if ok_import else 'FAILED')
    for line in lines:
        print('    ' + line)
    print(f'[2] NVRTC {nvrtc_version()}; archs: {", ".join("sm_" + a for a in archs)}')

    groups = [('samples', sample_calls())]
    if not args.samples_only:
        calls, errors = package_calls()
        print(f'    package: self_check.check(numpy) under the CPU harness: {len(calls)} '
              f'kernel calls recorded; worst relative error vs xp '
              f'{max(errors.values()) if errors else float("nan"):.1e}')
        groups.append(('package', calls))

    failures = 0
    for group, calls in groups:
        seen, variants = set(), []
        for call in calls:
            for label, code, options in kernel_variants(call):
                key = (code, options)
                if key not in seen:
                    seen.add(key)
                    variants.append((call, label, code, options))
        names = sorted({_field(c, 'name') for c in calls})
        counts = {a: [0, 0] for a in archs}
        started = time.perf_counter()
        with nvrtc_without_device():
            for call, label, code, options in variants:
                for arch in archs:
                    error = compile_one(code, options, arch)
                    counts[arch][error is not None] += 1
                    if args.list or error:
                        status = 'ok' if error is None else 'FAILED: ' + first_error_lines(error)
                        print(f'    {group} {_field(call, "name")} [{signature(call)}; {label}] '
                              f'sm_{arch}: {status}')
                    if error and args.dump:
                        os.makedirs(args.dump, exist_ok=True)
                        path = os.path.join(args.dump, f'{_field(call, "name")}_sm{arch}.cu')
                        with open(path, 'w') as f:
                            f.write(code)
        failures += sum(c[1] for c in counts.values())
        per_arch = '; '.join(f'sm_{a}: {c[0]} compiled, {c[1]} failed'
                             for a, c in counts.items())
        print(f'[3] {group}: {len(names)} kernels, {len(variants)} distinct sources '
              f'(definition x dtypes x layout) -> {per_arch} '
              f'({time.perf_counter() - started:.1f} s)')
    ok = ok_import and failures == 0
    print('NVRTC check:', 'passed' if ok else 'FAILED')
    return 0 if ok else 1


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except CheckError as e:
        print(f'check_kernels_nvrtc: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
