"""The GPU check: does mixnorm-chainer run, agree with the CPU, and how fast, on this GPU?

    python experiments/gpu_check.py [--device @cupy:0] [--json report.json] [--quick]
    make gpu-check

Runs in a few minutes on any CUDA GPU (`--device @numpy --quick` is the dry run CI uses, so the
script cannot rot):

1. the environment report of ``python -m mixnorm_chainer.reproduce.doctor``;
2. the kernel self-check (every kernel vs the xp path on the device);
3. the MN function forward/backward at conv3 size (256 x 128 x 8 x 8), kernels on and off,
   against float64 on the CPU;
4. ``fit_gmm`` on the device vs the CPU: EM from the same initialization (parameters) and a
   seeded fit (mean log-likelihood);
5. CifarCNN with BN and with MN at conv3: 20 RMSprop steps each, median ms per step and the
   ratio MN/BN; test-mode accuracy finite;
6. GBN forward/backward vs the CPU;
7. ``mixnorm-exp run cnn-c10-MN-2 --dataset digits --epochs 1`` on the device, then
   ``--resume --epochs 2`` (trainer, evaluator, snapshot, resume).

Prints one table (check, result, value, limit) and writes the JSON report. Exit status 1 when
a check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy

# isort: off
import mixnorm_chainer  # noqa: F401  (before chainer: numpy >= 2 support)
# isort: on
import chainer
import chainer.functions as F
from chainer.backend import get_array_module

from mixnorm_chainer import fit_gmm, gmm, mixture_normalization
from mixnorm_chainer.gbn import generalized_batch_normalization
from mixnorm_chainer.kernels import self_check
from mixnorm_chainer.models import CifarCNN
from mixnorm_chainer.reproduce import runfolder


class Checks:
    """Collects ``(name, ok, value, limit, note)`` rows."""

    def __init__(self):
        self.rows = []

    def add(self, name, value, limit=None, ok=None, note=''):
        if ok is None:
            ok = limit is None or (value is not None and numpy.isfinite(value) and value <= limit)
        self.rows.append({'check': name, 'ok': bool(ok), 'value': value, 'limit': limit,
                          'note': note})

    def run(self, name, fn):
        """Run one check section; an exception is a failed row, not the end of the script."""
        try:
            fn()
        except Exception as e:                            # report, go on with the next one
            self.add(name, None, ok=False, note='{}: {}'.format(type(e).__name__, e))
            traceback.print_exc(file=sys.stderr)

    def table(self):
        lines = ['{:<46} {:<5} {:>12} {:>10}  {}'.format('check', 'ok', 'value', 'limit',
                                                          'note')]
        for r in self.rows:
            value = '-' if r['value'] is None else '{:.3g}'.format(r['value'])
            limit = '' if r['limit'] is None else '{:.3g}'.format(r['limit'])
            lines.append('{:<46} {:<5} {:>12} {:>10}  {}'.format(
                r['check'], 'ok' if r['ok'] else 'FAIL', value, limit, r['note']))
        return '\n'.join(lines)


def relative(a, b):
    a, b = (numpy.asarray(chainer.backends.cuda.to_cpu(v), numpy.float64) for v in (a, b))
    return float(numpy.abs(a - b).max() / max(numpy.abs(b).max(), 1e-30))


def check_doctor(checks):
    out = subprocess.run([sys.executable, '-m', 'mixnorm_chainer.reproduce.doctor'],
                         capture_output=True, text=True, timeout=120)
    print(out.stdout)
    checks.add('doctor runs', out.returncode, ok=out.returncode == 0,
               note=out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr)


def check_self(checks, device):
    if device.xp is numpy:
        checks.add('kernel self-check', None, ok=True, note='skipped: no GPU (@numpy)')
        return
    errors = self_check.check(device.xp)
    for name, err in sorted(errors.items()):
        checks.add('kernel self-check: ' + name, err, self_check.tolerance(name))


def check_function(checks, device, shape):
    rng = numpy.random.default_rng(0)
    x = numpy.maximum(rng.normal(size=shape) + rng.normal(size=(1, shape[1], 1, 1)), 0) * 3
    m = shape[0] * shape[2] * shape[3]
    nu = rng.dirichlet(numpy.ones(3), size=m)
    gamma, beta = rng.uniform(0.5, 1.5, shape[1]), rng.normal(size=shape[1])
    gy = rng.normal(size=shape)

    def run(xp_arrays, dtype, **options):
        vs = [chainer.Variable(xp_arrays(a.astype(dtype))) for a in (x, gamma, beta)]
        y = mixture_normalization(*vs, xp_arrays(nu.astype(dtype)), **options)
        y.grad = xp_arrays(gy.astype(dtype))
        y.backward()
        return [y.array] + [v.grad for v in vs]

    for activation in (None, 'relu'):
        reference = run(numpy.asarray, numpy.float64, activation=activation)
        for use in (True, False):
            with chainer.using_config('mixnorm_kernels', use):
                ours = run(device.send, numpy.float32, activation=activation)
            err = max(relative(a, b) for a, b in zip(ours, reference))
            checks.add('MN {} {}, kernels {}: fwd+bwd vs CPU f64'.format(
                'x'.join(map(str, shape)), activation or 'plain', 'on' if use else 'off'),
                err, 1e-4)


def check_fit(checks, device, m, D):
    rng = numpy.random.default_rng(1)
    centres = rng.normal(scale=4, size=(3, D))
    X = (centres[rng.integers(0, 3, size=m)] + rng.normal(size=(m, D))).astype(numpy.float32)
    init = (numpy.full(3, 1 / 3, numpy.float32), centres.astype(numpy.float32),
            numpy.ones((3, D), numpy.float32))

    def em(xp_arrays, steps=3):
        Xd = xp_arrays(X)
        params = tuple(xp_arrays(a) for a in init)
        for _ in range(steps):
            log_resp, _ = gmm.e_step(Xd, *params)
            params = gmm.m_step(Xd, Xd * Xd, get_array_module(log_resp).exp(log_resp), 1e-6)
        return params

    cpu, dev = em(numpy.asarray), em(device.send)
    checks.add('EM from one init, {}x{}: params vs CPU'.format(m, D),
               max(relative(a, b) for a, b in zip(dev, cpu)), 1e-4)
    cpu_fit = fit_gmm(X, 3, kmeans_iters=1, em_iters=1, seed=0)
    dev_fit = fit_gmm(device.send(X), 3, kmeans_iters=1, em_iters=1, seed=0)
    a = cpu_fit.score(X)
    b = dev_fit.score(device.send(X))
    checks.add('seeded fit_gmm: mean log-likelihood vs CPU', abs(a - b) / abs(a), 1e-4)


def check_network(checks, device, batch, size, steps):
    rng = numpy.random.default_rng(0)
    x = device.send(rng.normal(size=(batch, 3, size, size)).astype(numpy.float32))
    t = device.send(rng.integers(0, 10, size=batch).astype(numpy.int32))
    timings = {}
    for name, layers in (('BN', ()), ('MN(conv3)', ('conv3',))):
        numpy.random.seed(0)
        model = CifarCNN(10, mn_layers=layers, seed=0)
        model.to_device(device)
        optimizer = chainer.optimizers.RMSprop(lr=1e-3, alpha=0.9)
        optimizer.setup(model)

        def step(model=model, optimizer=optimizer):
            loss = F.softmax_cross_entropy(model(x), t)
            model.cleargrads()
            loss.backward()
            optimizer.update()

        timings[name] = runfolder.median_seconds(step, device, steps)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            accuracy = float(F.accuracy(model(x), t).array)
        checks.add('CifarCNN {} batch {} {}x{}: ms/step'.format(name, batch, size, size),
                   1e3 * timings[name], note='test-mode accuracy {:.3f}'.format(accuracy),
                   ok=numpy.isfinite(accuracy))
    checks.add('CifarCNN step time MN/BN', timings['MN(conv3)'] / timings['BN'])


def check_gbn(checks, device):
    rng = numpy.random.default_rng(3)
    x = rng.normal(size=(16, 8, 6, 6))
    gamma, beta, gy = rng.uniform(0.5, 1.5, 8), rng.normal(size=8), rng.normal(size=x.shape)
    for deviation, alpha in (('std', None), ('mad', None), ('cvar', 0.75)):
        results = []
        for send in (numpy.asarray, device.send):
            vs = [chainer.Variable(send(a.astype(numpy.float32))) for a in (x, gamma, beta)]
            y = generalized_batch_normalization(*vs, deviation=deviation, alpha=alpha)
            y.grad = send(gy.astype(numpy.float32))
            y.backward()
            results.append([y.array] + [v.grad for v in vs])
        checks.add('GBN {} fwd+bwd vs CPU'.format(deviation),
                   max(relative(a, b) for a, b in zip(results[1], results[0])), 1e-4)


def check_runner(checks, device, quick):
    out = os.path.join(tempfile.mkdtemp(prefix='mixnorm-gpu-check-'), 'run')
    base = [sys.executable, '-m', 'mixnorm_chainer.reproduce.runner', 'run', 'cnn-c10-MN-2',
            '--dataset', 'digits', '--device', str(device), '--out', out, '--no-progress']
    if quick:
        base += ['--train-limit', '128', '--batch-size', '32']
    for extra in (['--epochs', '1'], ['--epochs', '2', '--resume']):
        start = time.perf_counter()
        proc = subprocess.run(base + extra, capture_output=True, text=True, timeout=600)
        ok = proc.returncode == 0
        note = (proc.stderr.strip().splitlines() or [''])[-1] if not ok else ''
        checks.add('mixnorm-exp run {}'.format(' '.join(extra)), time.perf_counter() - start,
                   ok=ok, note=note or 's')
        if not ok:
            return
    with open(os.path.join(out, 'log.json')) as f:
        log = json.load(f)
    checks.add('resumed run logged epochs 1 and 2', len(log),
               ok=[e['epoch'] for e in log] == [1, 2])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='@cupy:0', help="'@cupy:0' (default) or '@numpy'")
    parser.add_argument('--json', default='gpu_check.json', help='where to write the report')
    parser.add_argument('--quick', action='store_true', help='tiny sizes (the CI dry run)')
    args = parser.parse_args(argv)
    try:
        device = runfolder.get_device(args.device)
        device.use()
    except runfolder.RunError as e:
        print('gpu_check: {}'.format(e), file=sys.stderr)
        return 2
    checks = Checks()
    shape = (4, 8, 4, 4) if args.quick else (256, 128, 8, 8)
    checks.run('doctor', lambda: check_doctor(checks))
    checks.run('kernel self-check', lambda: check_self(checks, device))
    checks.run('MN function', lambda: check_function(checks, device, shape))
    checks.run('fit_gmm', lambda: check_fit(checks, device, *((200, 4) if args.quick
                                                              else (16384, 128))))
    checks.run('CifarCNN', lambda: check_network(
        checks, device, *((4, 16, 2) if args.quick else (64, 32, 20))))
    checks.run('GBN', lambda: check_gbn(checks, device))
    checks.run('mixnorm-exp run', lambda: check_runner(checks, device, args.quick))
    print(checks.table())
    report = {'device': str(device), 'quick': args.quick, 'checks': checks.rows,
              'ok': all(r['ok'] for r in checks.rows)}
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=1, default=float)
    print('report written to {}'.format(args.json))
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
