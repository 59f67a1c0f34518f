"""mixnorm-doctor (mixnorm_chainer/reproduce/doctor.py) and experiments/check_kernels_nvrtc.py on
the CPU."""
import json
import os
import subprocess
import sys
import types

import chainer.backends.cuda as cuda
import pytest

from mixnorm_chainer.reproduce import doctor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ('Python ', 'numpy ', 'chainer ', 'cupy ', '_compat ', 'CUDA ', 'cuDNN ', 'NCCL ',
            'kernels ', 'CPU: ', 'GPU: ')


def run_doctor(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'mixnorm_chainer.reproduce.doctor', *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))


@pytest.fixture
def no_nvidia_smi(monkeypatch):
    monkeypatch.setattr(doctor.shutil, 'which', lambda name: None)


@pytest.fixture
def fake_cupy(monkeypatch):
    """A cupy 14.2.0 that imports, whose CUDA libraries chainer could not load."""
    cupy = types.ModuleType('cupy')
    cupy.__version__ = '14.2.0'
    cupy.__spec__ = types.SimpleNamespace(name='cupy')  # find_spec('cupy') sees it installed
    cuda_mod = types.ModuleType('cupy.cuda')
    nccl = types.ModuleType('cupy.cuda.nccl')
    nccl.available = False
    cuda_mod.nccl = nccl
    cupy.cuda = cuda_mod
    for name, mod in (('cupy', cupy), ('cupy.cuda', cuda_mod), ('cupy.cuda.nccl', nccl)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(doctor, '_cuda_major_of_cupy', lambda: '13')
    monkeypatch.setattr(cuda, 'available', False)
    monkeypatch.setattr(cuda, '_resolution_error', ImportError(
        'Failure finding "libcublasLt.so.13 or libcublasLt.so.12": No such file: '
        'libcublasLt.so.13\n  listdir("/x/nvidia/cu13/lib"):\n    libnvrtc.so.13'),
        raising=False)
    return cupy


def test_doctor_without_cupy_prints_every_section_and_exits_0():
    result = run_doctor(env={'PATH': os.path.dirname(sys.executable)})  # no nvidia-smi
    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for section in SECTIONS:
        assert any(line.startswith(section) for line in lines), (section, result.stdout)
    if 'cupy' not in sys.modules:  # this venv has no cupy (CI, the dev machine)
        assert 'cupy     not installed; no nvidia-smi' in result.stdout
        assert lines[-1] == 'GPU: not usable: cupy is not installed'
    assert 'CPU: usable' in lines


def test_doctor_json_has_the_same_report():
    result = run_doctor('--json', env={'PATH': os.path.dirname(sys.executable)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {'python', 'numpy', 'chainer', 'cupy', 'compat', 'cuda', 'cudnn', 'nccl', 'kernels',
            'gpu', 'cpu'} <= set(report)
    assert report['cpu'] == {'ok': True, 'error': None}
    assert isinstance(report['compat']['applied'], list)


def test_kernel_switch_follows_the_environment_variable():
    result = run_doctor('--json', env={'MIXNORM_KERNELS': '0'})
    kernels = json.loads(result.stdout)['kernels']
    if kernels['module']:
        assert kernels['env'] == '0' and kernels['enabled'] is False
    assert 'MIXNORM_KERNELS=0' in doctor._kernels_line(kernels) or not kernels['module']


def test_fake_cupy_reports_version_and_the_missing_library(fake_cupy, no_nvidia_smi, capsys):
    assert doctor.main([]) == 0              # CPU use still works
    out = capsys.readouterr().out
    assert 'cupy     14.2.0' in out
    assert 'CUDA     chainer cuda.available: False (ImportError: Failure finding' in out
    assert 'libcublasLt.so.13 is missing: pip install nvidia-cublas' in out
    assert 'NCCL     absent: libnccl not found' in out and 'nvidia-nccl-cu13' in out
    assert out.splitlines()[-1] == ('GPU: not usable: libcublasLt.so.13 is missing: '
                                    'pip install nvidia-cublas')
    assert doctor.main(['--require-gpu']) == 1


def test_fake_usable_gpu_runs_the_kernel_self_check(fake_cupy, monkeypatch, capsys):
    monkeypatch.setattr(cuda, 'available', True)
    monkeypatch.setattr(cuda, 'cudnn_enabled', False)
    monkeypatch.setattr(doctor, '_gpu_usable', lambda c: (True, None))
    monkeypatch.setattr(doctor, '_cpu_check', lambda chainer: None)  # cuda.cupy is a stub here
    self_check = types.ModuleType('mixnorm_chainer.kernels.self_check')
    self_check.tolerance = lambda name: 1e-4
    self_check.check = lambda xp: {'e_step': 2e-7, 'transform_forward': 5e-8}
    monkeypatch.setitem(sys.modules, 'mixnorm_chainer.kernels.self_check', self_check)
    assert doctor.main(['--require-gpu']) == 0
    out = capsys.readouterr().out
    assert 'self-check 2 kernels vs xp: worst e_step 2.0e-07' in out
    assert out.splitlines()[-1] == 'GPU: usable'

    self_check.check = lambda xp: {'e_step': 0.5}
    assert doctor.main([]) == 0 and doctor.main(['--require-gpu']) == 1
    assert 'FAILED: e_step above 0.0001' in capsys.readouterr().out

    def broken(xp):
        raise RuntimeError('CUDA_ERROR_ILLEGAL_ADDRESS\nmore lines')
    self_check.check = broken
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    assert 'self-check FAILED: RuntimeError: CUDA_ERROR_ILLEGAL_ADDRESS' in out
    assert 'Traceback' not in out


def test_broken_cpu_stack_exits_1_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(doctor, '_cpu_check', lambda chainer: 'ValueError: broken numpy')
    assert doctor.main([]) == 1
    assert 'CPU: not usable: ValueError: broken numpy' in capsys.readouterr().out


def test_collect_failure_is_one_line_not_a_traceback(monkeypatch, capsys):
    def boom():
        raise OSError('disk gone')
    monkeypatch.setattr(doctor, 'collect', boom)
    assert doctor.main([]) == 1
    assert capsys.readouterr().err.strip() == (
        'mixnorm-doctor: could not inspect this environment: OSError: disk gone')


SMI_13 = '| NVIDIA-SMI 580.1   Driver Version: 580.1   CUDA Version: 13.0 |'
SMI_12 = '| NVIDIA-SMI 550.54  Driver Version: 550.54  CUDA Version: 12.4 |'
SMI_11 = '| NVIDIA-SMI 470.2   Driver Version: 470.2   CUDA Version: 11.4 |'


@pytest.fixture
def fake_numpy_version(monkeypatch):
    """Set the numpy version the doctor reads (it reads it through doctor._version)."""
    real = doctor._version

    def set_version(version):
        monkeypatch.setattr(doctor, '_version', lambda name: (version, None) if name == 'numpy'
                            else real(name))
    return set_version


@pytest.fixture
def fake_nvidia_smi(monkeypatch):
    def set_output(smi):
        monkeypatch.setattr(doctor.shutil, 'which', lambda name: '/usr/bin/nvidia-smi')
        monkeypatch.setattr(doctor.subprocess, 'run',
                            lambda *a, **k: types.SimpleNamespace(stdout=smi))
    return set_output


@pytest.mark.parametrize('numpy_version', ['2.5.5', '1.26.4'])
@pytest.mark.parametrize('smi, hint, numpy1_hint', [
    (SMI_13, "pip install 'cupy-cuda13x>=14'", "pip install 'cupy-cuda13x==13.6.0'"),
    (SMI_12, "pip install 'cupy-cuda12x>=13.6'", "pip install 'cupy-cuda12x==13.6.0'"),
    (SMI_11, 'update it', 'update it'),
])
def test_install_hint_follows_nvidia_smi_and_numpy(fake_nvidia_smi, fake_numpy_version, smi,
                                                   hint, numpy1_hint, numpy_version):
    fake_nvidia_smi(smi)
    fake_numpy_version(numpy_version)
    version, note = doctor.nvidia_smi_cuda()
    assert note == f'nvidia-smi: the driver supports CUDA {version}'
    text = doctor.cupy_install_hint(version)  # reads this environment's numpy
    assert text == doctor.cupy_install_hint(version, numpy_version)
    if numpy_version.startswith('2'):
        assert hint in text and '\n' not in text
    else:
        assert numpy1_hint in text
        if hint.startswith('pip'):  # CuPy 14 (what >=13.6 resolves to as well) needs numpy 2
            assert not text.startswith(hint) and "'cupy-cuda12x>=13.6'" not in text


def test_numpy1_hints_say_why_and_the_numpy2_way(fake_numpy_version):
    fake_numpy_version('1.26.4')
    cuda12 = doctor.cupy_install_hint('12.4')
    assert cuda12.startswith("pip install 'cupy-cuda12x==13.6.0'  (numpy 1.26.4 here, and "
                             'CuPy 14 needs numpy >= 2')
    cuda13 = doctor.cupy_install_hint('13.0').splitlines()
    assert cuda13[0].startswith('CuPy 14 (cupy-cuda13x>=14, the extra '
                                'mixnorm-chainer[gpu-cuda13]) needs numpy >= 2; numpy 1.26.4 here')
    assert cuda13[1].strip() == ('PIP_CONSTRAINT=requirements/constraints-numpy2.txt pip install '
                                 "-e '.[gpu-cuda13]'")
    assert 'make setup-numpy2' in cuda13[2]
    assert cuda13[3].startswith("or stay on numpy 1.x: pip install 'cupy-cuda13x==13.6.0'")
    # numpy not importable: the numpy-2 hint (the extras' own)
    assert doctor.cupy_install_hint('13.0', numpy_version='') == (
        "pip install 'cupy-cuda13x>=14'  (extra: mixnorm-chainer[gpu-cuda13])")


@pytest.mark.parametrize('numpy_version, expected', [
    ('2.5.5', ["         pip install 'cupy-cuda13x>=14'  (extra: mixnorm-chainer[gpu-cuda13])"]),
    ('1.26.4', ['         CuPy 14 (cupy-cuda13x>=14, the extra mixnorm-chainer[gpu-cuda13]) '
                'needs numpy >= 2; numpy 1.26.4 here. Either a numpy-2 environment, Python 3.12 '
                'preferred:',
                "           PIP_CONSTRAINT=requirements/constraints-numpy2.txt pip install -e "
                "'.[gpu-cuda13]'"]),
])
def test_doctor_prints_the_hint_for_the_numpy_it_runs_with(
        fake_nvidia_smi, fake_numpy_version, monkeypatch, capsys, numpy_version, expected):
    fake_nvidia_smi(SMI_13)
    fake_numpy_version(numpy_version)
    installed = doctor._installed
    monkeypatch.setattr(doctor, '_installed', lambda name: name != 'cupy' and installed(name))
    assert doctor.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f'numpy    {numpy_version}' in lines
    at = lines.index('cupy     not installed; nvidia-smi: the driver supports CUDA 13.0')
    assert lines[at + 1:at + 1 + len(expected)] == expected
    assert lines[-1] == 'GPU: not usable: cupy is not installed'


def test_missing_library_hints():
    assert doctor.missing_library_hint('libcudart.so.12: cannot open', '12') == (
        'libcudart.so.12 is missing: pip install nvidia-cuda-runtime-cu12 '
        '(or "cupy-cuda12x[ctk]" for every CUDA library)')
    assert 'the NVIDIA driver' in doctor.missing_library_hint('libcuda.so.1: cannot open')
    assert doctor.missing_library_hint('no such symbol') is None


def test_console_script_is_declared():
    with open(os.path.join(ROOT, 'setup.cfg')) as f:
        assert 'mixnorm-doctor = mixnorm_chainer.reproduce.doctor:main' in f.read()


def test_nvrtc_check_help_and_no_cupy_message():
    script = os.path.join(ROOT, 'experiments', 'check_kernels_nvrtc.py')
    result = subprocess.run([sys.executable, script, '--help'], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and '--samples-only' in result.stdout
    if 'cupy' in sys.modules:
        return
    result = subprocess.run([sys.executable, script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith('check_kernels_nvrtc: needs cupy')
    assert 'Traceback' not in result.stderr


def test_driver_error_names_the_missing_driver(monkeypatch, no_nvidia_smi):
    def no_driver():
        raise RuntimeError('cudaErrorInsufficientDriver: CUDA driver version is insufficient')
    fake = types.SimpleNamespace(available=True, cupy=types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))))
    usable, reason = doctor._gpu_usable(fake)
    assert not usable
    assert reason == ('RuntimeError: cudaErrorInsufficientDriver: CUDA driver version is '
                      'insufficient (no NVIDIA driver on this machine)')
