"""Import a ``figures/figureN.py`` script as a module (the scripts are not a package), and
fabricate the run folders the figure scripts read."""
import json
import os

import numpy

from mixnorm_chainer.reproduce import registry

import script_loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(n):
    """The module ``figures/figure{n}.py``."""
    return script_loader.load_script('figures/figure{}.py'.format(n))


PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def make_run(root, name, dataset=None, epochs=12, final_error=20.0, tau=3.0, noise=1.0,
             seed=0, iterations_per_epoch=5, modules=None, recording_iters=None, log=True,
             out=None):
    """Fabricate a run directory like ``mixnorm-exp run NAME`` writes (in ``out``, default
    ``root/NAME@DATASET``): setting.json, log.json with synthetic test/training error curves,
    and, given ``modules``, a recording.npz whose component counts wander below K = the
    setting's n_components."""
    setting = registry.get(name)
    dataset = dataset or setting.dataset
    out = out or os.path.join(str(root), '{}@{}'.format(name, dataset))
    os.makedirs(out, exist_ok=True)
    record = {'setting': setting.to_dict(), 'dataset': dataset, 'epochs': epochs,
              'batch_size': setting.batch_size, 'iterations_per_epoch': iterations_per_epoch,
              'seed': seed}
    with open(os.path.join(out, 'setting.json'), 'w') as f:
        json.dump(record, f)
    rng = numpy.random.default_rng(seed)
    entries = []
    for e in range(1, epochs + 1):
        test_err = final_error + (90 - final_error) * numpy.exp(-e / tau) + noise * rng.normal()
        train_err = 0.5 * final_error + (90 - final_error) * numpy.exp(-e / tau)
        entries.append({
            'epoch': e, 'iteration': e * iterations_per_epoch,
            'main/loss': float(train_err / 20 + 0.01), 'main/accuracy': 1 - train_err / 100,
            'validation/main/loss': float(test_err / 20), 'validation/main/accuracy':
            float(numpy.clip(1 - test_err / 100, 0, 1)), 'lr': setting.lr,
            'elapsed_time': 1.5 * e})
    if log:
        with open(os.path.join(out, 'log.json'), 'w') as f:
            json.dump(entries, f)
    if modules:
        T = recording_iters or epochs * iterations_per_epoch
        K = setting.n_components
        arrays = {'iterations': numpy.arange(1, T + 1), 'captures': numpy.array('[]'),
                  'cap0/x': numpy.zeros((2, 3), numpy.float32)}
        for i, m in enumerate(modules):
            drop = rng.random(T) < (0.05 + 0.3 * (i % 3 == 2) * numpy.linspace(0, 1, T))
            arrays['components/' + m] = (K - drop * rng.integers(1, 3, T)).astype(numpy.int64)
            arrays['components/' + m][:2] = -1        # the recorder's "not fitted yet"
        numpy.savez(os.path.join(out, 'recording.npz'), **arrays)
    return out


def check_png(path):
    assert os.path.getsize(path) > 5000
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_MAGIC
