"""Recording activations and mixtures during training, for the paper's figures (1, 8, 9).

:class:`ActivationRecorder` is a ``chainer.training`` extension. It

* captures the **input** of named normalization layers (e.g. ``conv2`` of the CIFAR CNN: the
  convolution's output, Figure 1) for one training mini-batch at chosen fractions of training
  (default 20/40/60/80/100%, Figure 8), together with the mixture that layer fitted to that
  very batch when it is an MN layer (weights, means, variances), and
* records, at every iteration, the effective number of components (after pruning, Section 5.3)
  of every MN layer of the model (Figure 9).

Everything goes to one compressed ``recording.npz`` next to the run's log:

* ``iterations`` (T,) and ``components/<layer>`` (T,): the per-iteration component counts;
* ``captures``: a JSON list of ``{key, layer, fraction, iteration, epoch, is_mn, shape}``;
* ``<key>/x``: up to ``max_rows`` rows (positions) of the captured input, (rows, C), float16;
* ``<key>/weights``, ``<key>/means``, ``<key>/variances``: the fitted mixture (MN layers).

Layer names are the keys of the model's ``norm_layers()`` (``conv2``, ``inc2/0/2/4``,
``final``, ...). The file is rewritten at each capture and at the end of each epoch (when
snapshots are taken); a resumed run keeps what was recorded before its snapshot.
"""
import json
import os

import chainer
import numpy
from chainer import training
from chainer.backends import cuda

from mixnorm_chainer.functions import to_rows
from mixnorm_chainer.links import MixtureNormalization

DEFAULT_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


class _CaptureHook(chainer.LinkHook):
    """Keeps the input of the links it is attached to while armed."""

    name = 'ActivationRecorderHook'

    def __init__(self):
        self.armed = False
        self.captured = {}

    def forward_preprocess(self, args):
        # the first training-mode forward after arming: the update's, not the Evaluator's
        key = id(args.link)
        if self.armed and args.args and chainer.config.train and key not in self.captured:
            x = args.args[0]
            self.captured[key] = x.array if isinstance(x, chainer.Variable) else x


def load_run_recording(run, record_hint):
    """``load_recording(RUN/recording.npz)``, or a ValueError whose one-line message says why
    it is missing and how it is written (``record_hint``: the ``--record`` argument to show)."""
    path = os.path.join(run, 'recording.npz')
    if not os.path.isfile(path):
        raise ValueError('{} has no recording.npz ({}); it is written by `mixnorm-exp run NAME '
                         '--record {} --out DIR`'.format(
                             run, 'no such folder' if not os.path.isdir(run)
                             else 'not recorded, or the run has not started', record_hint))
    try:
        return load_recording(path)
    except (ValueError, OSError, KeyError) as e:        # a damaged file
        raise ValueError('{}: {}'.format(path, ' '.join(str(e).split()))) from None


def load_recording(path):
    """``recording.npz`` as a dict: ``iterations``, ``components`` {layer: counts},
    ``captures`` [dict with the capture's metadata and arrays]."""
    with numpy.load(path) as f:
        data = {k: f[k] for k in f.files}
    captures = json.loads(str(data.get('captures', '[]')))
    for cap in captures:
        for name in ('x', 'weights', 'means', 'variances'):
            key = '{}/{}'.format(cap['key'], name)
            if key in data:
                cap[name] = data[key]
    components = {k[len('components/'):]: v for k, v in data.items()
                  if k.startswith('components/')}
    return {'iterations': data.get('iterations', numpy.zeros(0, numpy.int64)),
            'components': components, 'captures': captures}


class ActivationRecorder(training.Extension):
    """Trainer extension recording normalization inputs and MN mixtures (Figures 1, 8, 9).

    Args:
        model: the network with ``norm_layers()`` (e.g. ``classifier.predictor``).
        layers: names (keys of ``norm_layers()``) whose input to capture; may be empty, then
            only the per-iteration component counts of the MN layers are recorded.
        fractions: fractions of the training's iterations at which to capture.
        filename: file name in the trainer's output directory.
        max_rows: keep at most this many rows (random positions) of each capture.
        seed: seed of the row subsampling.
    """

    trigger = 1, 'iteration'
    priority = training.PRIORITY_READER
    name = 'ActivationRecorder'

    def __init__(self, model, layers=(), fractions=DEFAULT_FRACTIONS, filename='recording.npz',
                 max_rows=4096, seed=0):
        norms = model.norm_layers()
        unknown = [name for name in layers if name not in norms]
        if unknown:
            raise ValueError('cannot record unknown layer(s) {}; the model has {}'.format(
                unknown, list(norms)))
        if not all(0 < f <= 1 for f in fractions):
            raise ValueError('fractions must be in (0, 1]; got {}'.format(fractions))
        self.layers = tuple(layers)
        self.fractions = tuple(sorted(fractions))
        self.filename = filename
        self.max_rows = max_rows
        self._rng = numpy.random.RandomState(seed)
        self._norms = norms
        self._mn = {name: link for name, link in norms.items()
                    if isinstance(link, MixtureNormalization)}
        self._hook = _CaptureHook()
        self._targets = {}
        self._iterations = []
        self._components = {name: [] for name in self._mn}
        self._captures = []
        self._arrays = {}
        self._checked_resume = False

    @staticmethod
    def total_iterations(trainer):
        """Iterations of the whole run, from the stop trigger and the training iterator."""
        period, unit = trainer.stop_trigger.get_training_length()
        if unit == 'iteration':
            return int(period)
        iterator = trainer.updater.get_iterator('main')
        return int(numpy.ceil(period * len(iterator.dataset) / iterator.batch_size))

    def initialize(self, trainer):
        self._out = trainer.out
        total = self.total_iterations(trainer)
        if self.layers:
            for f in self.fractions:
                self._targets.setdefault(max(1, int(round(f * total))), f)
            for name in self.layers:
                self._norms[name].add_hook(self._hook)
        self._hook.armed = (trainer.updater.iteration + 1) in self._targets

    def _resume(self, trainer, iteration):
        """After a snapshot was loaded: keep what the file recorded before this iteration."""
        path = os.path.join(trainer.out, self.filename)
        if self._iterations or iteration <= 1 or not os.path.exists(path):
            return
        old = load_recording(path)
        keep = old['iterations'] < iteration
        self._iterations = old['iterations'][keep].tolist()
        for name in self._components:
            if name in old['components']:
                self._components[name] = old['components'][name][keep].tolist()
        for cap in old['captures']:
            if cap['iteration'] < iteration:
                meta = {k: cap[k] for k in ('key', 'layer', 'fraction', 'iteration', 'epoch',
                                            'is_mn', 'shape')}
                self._captures.append(meta)
                for name in ('x', 'weights', 'means', 'variances'):
                    if name in cap:
                        self._arrays['{}/{}'.format(cap['key'], name)] = cap[name]

    def __call__(self, trainer):
        iteration = trainer.updater.iteration
        if not self._checked_resume:
            self._checked_resume = True
            self._resume(trainer, iteration)
        if self._mn:
            self._iterations.append(iteration)
            for name, link in self._mn.items():
                k = link.n_effective_components
                self._components[name].append(-1 if k is None else k)
        changed = False
        if iteration in self._targets and self._hook.captured:
            self._capture(trainer, iteration)
            changed = True
        self._hook.captured = {}
        self._hook.armed = (iteration + 1) in self._targets
        if changed or trainer.updater.is_new_epoch:
            self.write(trainer.out)

    def _capture(self, trainer, iteration):
        for name in self.layers:
            link = self._norms[name]
            x = self._hook.captured.get(id(link))
            if x is None:
                continue
            rows = cuda.to_cpu(to_rows(x))
            if rows.shape[0] > self.max_rows:
                keep = numpy.sort(self._rng.choice(rows.shape[0], self.max_rows, replace=False))
                rows = rows[keep]
            key = 'cap{}'.format(len(self._captures))
            is_mn = isinstance(link, MixtureNormalization) and link.last_fit is not None
            self._arrays[key + '/x'] = rows.astype(numpy.float16)
            if is_mn:
                for attr in ('weights', 'means', 'variances'):
                    self._arrays['{}/{}'.format(key, attr)] = cuda.to_cpu(
                        getattr(link.last_fit, attr))
            self._captures.append({
                'key': key, 'layer': name, 'fraction': self._targets[iteration],
                'iteration': int(iteration), 'epoch': float(trainer.updater.epoch_detail),
                'is_mn': bool(is_mn), 'shape': [int(s) for s in x.shape]})

    def write(self, out):
        arrays = dict(self._arrays)
        arrays['iterations'] = numpy.asarray(self._iterations, dtype=numpy.int64)
        for name, counts in self._components.items():
            arrays['components/' + name] = numpy.asarray(counts, dtype=numpy.int64)
        arrays['captures'] = numpy.asarray(json.dumps(self._captures))
        path = os.path.join(out, self.filename)
        tmp = path + '.tmp.npz'
        numpy.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    def finalize(self):
        if getattr(self, '_out', None) is not None:
            self.write(self._out)
        for name in self.layers:
            link = self._norms[name]
            if self._hook.name in link.local_link_hooks:
                link.delete_hook(self._hook.name)
