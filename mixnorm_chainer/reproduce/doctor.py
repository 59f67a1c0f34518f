"""``mixnorm-doctor``: what this environment can run, on one screen, never a traceback.

Reports Python, numpy, chainer and cupy versions (with the pip command for the CUDA major that
``nvidia-smi`` reports when cupy is missing, for the numpy installed: CuPy 14 needs numpy 2),
what :mod:`mixnorm_chainer._compat` adapted, chainer's CUDA state (``cuda.available`` and,
when False although cupy is installed, why, with the wheel that provides a missing library),
cuDNN, NCCL, the kernel switch (``chainer.config.mixnorm_kernels``, ``MIXNORM_KERNELS=0``)
and, when a GPU is usable, the kernel self-check
(:func:`mixnorm_chainer.kernels.self_check.check`, about a second).

Exit status: 0 when everything needed for CPU use works (1 otherwise); with ``--require-gpu``
also 1 when the GPU is not usable or the kernel self-check fails. ``--json`` prints the same
report as JSON. Also ``python -m mixnorm_chainer.reproduce.doctor``.
"""
import argparse
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys

#: library name in a loader error -> the pip wheel that provides it, per CUDA major
_LIBRARY_WHEELS = {
    'cublas': 'nvidia-cublas', 'cublaslt': 'nvidia-cublas', 'cudart': 'nvidia-cuda-runtime',
    'nvrtc': 'nvidia-cuda-nvrtc', 'cufft': 'nvidia-cufft', 'curand': 'nvidia-curand',
    'cusolver': 'nvidia-cusolver', 'cusparse': 'nvidia-cusparse',
    'nvjitlink': 'nvidia-nvjitlink', 'nccl': 'nvidia-nccl',
}


def _one_line(error):
    if isinstance(error, BaseException):
        lines = str(error).strip().splitlines()
        text = lines[0].strip() if lines else ''
        return f'{type(error).__name__}: {text}' if text else type(error).__name__
    return ' '.join(str(error).split())


def wheel_for(major, library):
    """The pip wheel providing ``library`` (e.g. 'cublasLt') for CUDA ``major``, or None."""
    base = _LIBRARY_WHEELS.get(library.lower())
    if base is None:
        return None
    if base == 'nvidia-nccl':
        return f'nvidia-nccl-cu{major}'
    return base if str(major) == '13' else f'{base}-cu{major}'


def missing_library_hint(error, cupy_major=None):
    """'libcublasLt.so.13 is missing: pip install nvidia-cublas' for a loader error, or None."""
    m = re.search(r'lib([A-Za-z]+)\.so\.(\d+)', str(error))
    if m is None:
        return None
    library, major = m.group(1), cupy_major or m.group(2)
    name = f'lib{library}.so.{major}'
    if library == 'cuda':
        return f'{name} (the NVIDIA driver) is missing: install the driver, not a pip wheel'
    wheel = wheel_for(major, library)
    if wheel is None:
        return f'{name} is missing'
    return (f'{name} is missing: pip install {wheel} '
            f'(or "cupy-cuda{major}x[ctk]" for every CUDA library)')


def nvidia_smi_cuda():
    """(CUDA version the driver supports, e.g. '12.4', or None, one-line note)."""
    exe = shutil.which('nvidia-smi')
    if exe is None:
        return None, 'no nvidia-smi (no NVIDIA driver on this machine)'
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f'nvidia-smi failed: {_one_line(e)}'
    m = re.search(r'CUDA Version:\s*(\d+)\.(\d+)', out)
    if m is None:
        return None, 'nvidia-smi reports no CUDA version'
    version = f'{m.group(1)}.{m.group(2)}'
    return version, f'nvidia-smi: the driver supports CUDA {version}'


#: CuPy 14 needs numpy >= 2; CuPy 13.6 is the last CuPy for numpy 1.x (for CUDA 12 and 13)
CUPY_FOR_NUMPY1 = '13.6.0'


def _numpy_major(numpy_version):
    """1, 2, ... from a version string such as '1.26.4'; None when unknown."""
    m = re.match(r'(\d+)\.', str(numpy_version or ''))
    return int(m.group(1)) if m else None


def cupy_install_hint(cuda_version, numpy_version=None):
    """The pip command for the cupy matching a driver's CUDA version and this environment's
    numpy (``numpy_version``, by default the one installed: CuPy 14 needs numpy >= 2, on numpy
    1.x CuPy 13.6), or None (no driver). Can span lines."""
    if cuda_version is None:
        return None
    if numpy_version is None:
        numpy_version = _version('numpy')[0]
    major = int(cuda_version.split('.')[0])
    if major < 12:
        return (f'the driver supports only CUDA {cuda_version}: update it to CUDA 12 or 13 '
                '(cupy 14)')
    cuda = '13' if major >= 13 else '12'
    extra = f'mixnorm-chainer[gpu-cuda{cuda}]'
    numpy1 = _numpy_major(numpy_version) == 1
    if not numpy1:
        at_least = '14' if cuda == '13' else '13.6'
        return f"pip install 'cupy-cuda{cuda}x>={at_least}'  (extra: {extra})"
    pin = f"pip install 'cupy-cuda{cuda}x=={CUPY_FOR_NUMPY1}'"
    numpy1_note = f'the last CuPy for numpy 1.x; it needs a CUDA {cuda} toolkit on the machine'
    if cuda == '12':
        return (f'{pin}  (numpy {numpy_version} here, and CuPy 14 needs numpy >= 2: CuPy '
                f'{CUPY_FOR_NUMPY1} is {numpy1_note})')
    return (f'CuPy 14 (cupy-cuda13x>=14, the extra {extra}) needs numpy >= 2; numpy '
            f'{numpy_version} here. Either a numpy-2 environment, Python 3.12 preferred:\n'
            "  PIP_CONSTRAINT=requirements/constraints-numpy2.txt pip install -e '.[gpu-cuda13]'\n"
            "  (or `make setup-numpy2`, then `.venv-numpy2/bin/pip install 'cupy-cuda13x>=14'`)\n"
            f'or stay on numpy 1.x: {pin}  ({numpy1_note})')


def _installed(module_name):
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules without a __spec__
        return module_name in sys.modules


def _version(module_name):
    try:
        return importlib.import_module(module_name).__version__, None
    except Exception as e:  # noqa: BLE001 (any failure is the report)
        return None, _one_line(e)


def _cupy_report(numpy_version=None):
    """cupy section (the install hint fits ``numpy_version``, this environment's numpy)."""
    report = {'installed': _installed('cupy')}
    if not report['installed']:
        smi_version, smi_note = nvidia_smi_cuda()
        report.update(version=None, note=smi_note,
                      install=cupy_install_hint(smi_version, numpy_version))
        return report
    version, error = _version('cupy')
    report.update(version=version, import_error=error)
    return report


def _cuda_report(cuda, cupy_report):
    if cuda is None:
        return {'available': False, 'reason': 'chainer did not import'}
    available = bool(getattr(cuda, 'available', False))
    report = {'available': available, 'reason': None, 'hint': None}
    if not available:
        if not cupy_report['installed']:
            report['reason'] = 'cupy is not installed'
        else:
            error = getattr(cuda, '_resolution_error', None)
            report['reason'] = _one_line(error) if error is not None else 'unknown'
            report['hint'] = missing_library_hint(error, _cuda_major_of_cupy())
    return report


def _cuda_major_of_cupy():
    from importlib import metadata
    for major in ('13', '12', '11'):
        try:
            metadata.version(f'cupy-cuda{major}x')
            return major
        except metadata.PackageNotFoundError:
            continue
    return None


def _cudnn_report(cuda, applied):
    if cuda is None or not getattr(cuda, 'available', False):
        return {'enabled': False, 'why': 'CUDA not available'}
    if getattr(cuda, 'cudnn_enabled', False):
        version = None
        try:
            version = cuda.cuda.cudnn.getVersion()
        except Exception:  # noqa: BLE001
            pass
        return {'enabled': True, 'why': f'cuDNN {version}' if version else 'cuDNN found'}
    if any(a.startswith('CHAINER_CUDNN=0') for a in applied):
        why = ('cupy >= 14 has no cuDNN; chainer uses its own kernels and cuBLAS '
               '(CHAINER_CUDNN=0 set by mixnorm_chainer._compat)')
    elif getattr(cuda, '_cudnn_disabled_by_user', False):
        why = 'disabled by CHAINER_CUDNN=0'
    else:
        why = 'cupy has no cuDNN (' + _one_line(getattr(cuda, '_resolution_error', '?')) + ')'
    return {'enabled': False, 'why': why}


def _nccl_report(cupy_report):
    if not cupy_report['installed'] or cupy_report.get('version') is None:
        return {'present': False, 'why': 'no cupy'}
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # cupy warns at length when libnccl is missing
            from cupy.cuda import nccl
        if getattr(nccl, 'available', True):
            return {'present': True, 'why': f'NCCL {nccl.get_version()}'}
        why = 'libnccl not found'
    except Exception as e:  # noqa: BLE001
        why = _one_line(e)
    major = _cuda_major_of_cupy() or '13'
    return {'present': False,
            'why': f'{why}; only multi-GPU ChainerMN needs it: pip install nvidia-nccl-cu{major}'}


def _kernels_report(chainer):
    env = os.environ.get('MIXNORM_KERNELS')
    report = {'module': _installed('mixnorm_chainer.kernels'),
              'env': env, 'enabled': None, 'error': None}
    if report['module']:
        try:
            importlib.import_module('mixnorm_chainer.kernels')
        except Exception as e:  # noqa: BLE001
            report['error'] = _one_line(e)
    if chainer is not None:
        report['enabled'] = getattr(chainer.config, 'mixnorm_kernels', None)
    return report


def _gpu_usable(cuda):
    """(usable, reason) -- reason is None when usable."""
    if cuda is None:
        return False, 'chainer did not import'
    if not getattr(cuda, 'available', False):
        return False, 'chainer cannot use CUDA (see CUDA above)'
    try:
        n = cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001
        reason = _one_line(e)
        if 'InsufficientDriver' in reason or 'NoDevice' in reason:
            version, note = nvidia_smi_cuda()
            reason += (' (no NVIDIA driver on this machine)' if version is None else
                       f' ({note}; cupy was built for a newer CUDA: use the cupy of that major)')
        return False, reason
    if n < 1:
        return False, 'no CUDA device'
    try:
        x = cuda.cupy.arange(4, dtype='f')
        if float((x * x).sum()) != 14.0:
            return False, 'a tiny cupy computation gave a wrong result'
    except Exception as e:  # noqa: BLE001
        return False, _one_line(e)
    return True, None


def _self_check(cuda):
    try:
        self_check = importlib.import_module('mixnorm_chainer.kernels.self_check')
        errors = {k: float(v) for k, v in self_check.check(cuda.cupy).items()}
    except Exception as e:  # noqa: BLE001
        return {'ok': False, 'error': _one_line(e), 'errors': {}}
    bad = [k for k, v in errors.items() if not v <= self_check.tolerance(k)]
    return {'ok': not bad, 'errors': errors,
            'error': ', '.join(f'{k} above {self_check.tolerance(k):g}' for k in bad) if bad
            else None}


def _cpu_check(chainer):
    """None when a tiny chainer computation on numpy works, else the error."""
    try:
        import chainer.functions as F
        import numpy
        x = chainer.Variable(numpy.arange(6, dtype=numpy.float32).reshape(2, 3))
        y = F.sum(F.relu(x - 1))
        y.backward()
        if float(y.array) != 10.0 or x.grad is None:
            return 'a tiny chainer computation gave a wrong result'
    except Exception as e:  # noqa: BLE001
        return _one_line(e)
    return None


def collect():
    """The whole report as a dict (what ``--json`` prints)."""
    report = {'python': platform.python_version(), 'executable': sys.executable}
    report['numpy'], numpy_error = _version('numpy')
    chainer = cuda = None
    try:
        from mixnorm_chainer import _compat  # before chainer (numpy 2, CuPy 14)
        applied = list(_compat.applied)
    except Exception as e:  # noqa: BLE001
        applied, compat_error = [], _one_line(e)
    else:
        compat_error = None
    import warnings
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import chainer
            import chainer.backends.cuda as cuda
        report['chainer'], chainer_error = chainer.__version__, None
    except Exception as e:  # noqa: BLE001
        caught, chainer, report['chainer'], chainer_error = [], None, None, _one_line(e)
    # cupy's multi-line NCCL warning is summed up in the NCCL line
    report['import_warnings'] = [_one_line(w.message) for w in caught
                                 if 'nccl' not in str(w.message).lower()]
    report['compat'] = {'applied': applied, 'error': compat_error}
    report['cupy'] = _cupy_report(report['numpy'])
    report['cuda'] = _cuda_report(cuda, report['cupy'])
    report['cudnn'] = _cudnn_report(cuda, applied)
    report['nccl'] = _nccl_report(report['cupy'])
    report['kernels'] = _kernels_report(chainer)
    usable, reason = _gpu_usable(cuda)
    report['self_check'] = _self_check(cuda) if usable else None
    report['gpu'] = {'usable': usable, 'reason': reason}
    cpu_error = numpy_error or compat_error or chainer_error or (
        _cpu_check(chainer) if chainer is not None else None)
    report['cpu'] = {'ok': cpu_error is None, 'error': cpu_error}
    return report


def _kernels_line(k):
    if not k['module']:
        return 'mixnorm_chainer.kernels not present (xp path only)'
    if k['error']:
        return f'mixnorm_chainer.kernels failed to import: {k["error"]}'
    state = {True: 'on', False: 'off', None: 'not set'}[k['enabled']]
    env = '' if k['env'] is None else f' (MIXNORM_KERNELS={k["env"]})'
    return (f'chainer.config.mixnorm_kernels: {state}{env} (CUDA kernels for cupy arrays; '
            'MIXNORM_KERNELS=0 turns them off)')


def format_report(r):
    cupy, cuda, cudnn, nccl = r['cupy'], r['cuda'], r['cudnn'], r['nccl']
    lines = [f'Python   {r["python"]} ({r["executable"]})',
             f'numpy    {r["numpy"] or "not importable"}',
             f'chainer  {r["chainer"] or "not importable: " + str(r["cpu"]["error"])}']
    if cupy['installed']:
        lines.append(f'cupy     {cupy["version"] or "import fails: " + str(cupy["import_error"])}')
    else:
        lines.append(f'cupy     not installed; {cupy["note"]}')
        if cupy['install']:
            lines += [f'         {line}' for line in cupy['install'].splitlines()]
    applied = r['compat']['applied'] or ['nothing adapted (not needed here)']
    lines += [('_compat  ' if i == 0 else '         ') + a for i, a in enumerate(applied)]
    for w in r.get('import_warnings') or []:
        lines.append(f'warning  {w}')
    if r['compat']['error']:
        lines.append(f'         _compat failed: {r["compat"]["error"]}')
    cuda_line = 'CUDA     chainer cuda.available: ' + str(cuda['available'])
    if not cuda['available']:
        cuda_line += f' ({cuda["reason"]})'
    lines.append(cuda_line)
    if cuda.get('hint'):
        lines.append(f'         {cuda["hint"]}')
    lines.append(f'cuDNN    {"on" if cudnn["enabled"] else "off"}: {cudnn["why"]}')
    lines.append(f'NCCL     {"present" if nccl["present"] else "absent"}: {nccl["why"]}')
    lines.append('kernels  ' + _kernels_line(r['kernels']))
    sc = r['self_check']
    if sc is not None:
        if sc['errors']:
            worst = max(sc['errors'].items(), key=lambda kv: kv[1])
            lines.append(f'self-check {len(sc["errors"])} kernels vs xp: worst {worst[0]} '
                         f'{worst[1]:.1e}' + ('' if sc['ok'] else f'; FAILED: {sc["error"]}'))
        else:
            lines.append(f'self-check FAILED: {sc["error"]}')
    lines.append('CPU: ' + ('usable' if r['cpu']['ok'] else f'not usable: {r["cpu"]["error"]}'))
    gpu = r['gpu']
    if gpu['usable']:
        tail = '' if sc is None or sc['ok'] else (
            ', but the kernel self-check failed (MIXNORM_KERNELS=0 uses the xp path)')
        lines.append('GPU: usable' + tail)
    else:
        reason = gpu['reason']
        if not cuda['available'] and cuda.get('reason'):
            reason = (cuda.get('hint') or cuda['reason']).split(' (or ')[0]
        lines.append(f'GPU: not usable: {reason}')
    return '\n'.join(lines)


def exit_status(r, require_gpu=False):
    if not r['cpu']['ok']:
        return 1
    if require_gpu and not (r['gpu']['usable'] and (r['self_check'] or {}).get('ok')):
        return 1
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog='mixnorm-doctor', description=(
        'Report what this environment can run: versions, CUDA/cuDNN/NCCL state, the kernel '
        'switch and (with a GPU) a kernel self-check. Exit 0 when CPU use works.'))
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    p.add_argument('--require-gpu', action='store_true',
                   help='exit 1 unless the GPU is usable and the kernel self-check passes')
    args = p.parse_args(argv)
    try:
        report = collect()
    except Exception as e:  # noqa: BLE001 (last resort: one line, never a traceback)
        print(f'mixnorm-doctor: could not inspect this environment: {_one_line(e)}',
              file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return exit_status(report, args.require_gpu)


if __name__ == '__main__':
    sys.exit(main())
