"""Run folders of ``mixnorm-exp run``: creating them without overwriting, resuming them exactly.

Shared by :mod:`mixnorm_chainer.reproduce.training` (classification) and
:mod:`mixnorm_chainer.reproduce.gan` (DCGAN); it imports neither, so the dependency runs one way
(training -> gan -> runfolder).

* :class:`RunFolder` is one run's folder and the resume protocol both kinds of run follow:
  :meth:`~RunFolder.open` checks ``--out`` (:func:`prepare`) and, for ``--resume``, reads the
  run's ``setting.json`` record; :meth:`~RunFolder.fill_options` takes the options not given
  from it, :meth:`~RunFolder.refuse_changed` refuses given ones that differ;
  :meth:`~RunFolder.find_snapshot` finds the newest readable snapshot and reads how far the run
  got, :meth:`~RunFolder.complete` says when there is nothing left to do;
  :meth:`~RunFolder.load` loads the snapshot into the trainer; :meth:`~RunFolder.record` adds
  the resume to the record's history and :meth:`~RunFolder.write` writes ``setting.json`` and
  the ChainerUI files.
* :func:`prepare` checks ``--out`` before anything is trained: a folder that already holds a
  run is refused unless ``--resume`` (continue it) or ``--force`` (replace its run files) is
  given; a file, or a place that cannot be written, is a one-line :class:`RunError`.
  :func:`create` makes the folder only when the run really starts, so a run that fails early
  (no CIFAR, bad options) leaves no empty folder behind.
* :func:`options_of` reads the options a ``setting.json`` record holds (also for summaries).
* :class:`Snapshot` writes the trainer's snapshot atomically (a hidden temporary file, fsync,
  ``os.replace``), so a SIGKILL never leaves a truncated newest snapshot; the two newest are
  kept. :func:`load_snapshot` loads the newest readable one and says in one line when it had
  to fall back to the previous one.
* :class:`ResumableShuffle` (order sampler) and :class:`RandomStates` (an extension that puts
  random generators into the snapshot) make the data order and every other random draw part of
  the snapshot: a resumed run equals the uninterrupted run bit for bit.
  :func:`seeded_numpy_random` lends numpy's global generator a seeded state for a block (model
  building and training: chainer's initializers draw from it) and gives the caller's back.
* :func:`write_json` writes JSON atomically; :func:`write_chainerui_files` writes the ``args``
  file and the ``log`` link that ChainerUI reads.
"""
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import time
import zipfile

import chainer
import numpy
from chainer import training

SNAPSHOT_PREFIX = 'snapshot_'
#: the files and folders a run writes into its folder (what --force replaces)
#: models written by ``mixnorm-exp recompute`` (mixnorm_chainer.reproduce.inference)
RECOMPUTED_PREFIX = 'recomputed_'
RUN_FILES = ('setting.json', 'log.json', 'log', 'args', 'recording.npz', 'loss.png',
             'accuracy.png', 'samples')


class RunError(ValueError):
    """A user mistake about a run folder or its options; the message is one line saying what is
    wrong and what to do."""


# -- small shared helpers ------------------------------------------------------------------

def software_versions():
    """The versions a run's ``setting.json`` records."""
    return {'chainer': chainer.__version__, 'numpy': numpy.__version__,
            'python': sys.version.split()[0]}


def format_value(v, spec='{:.2f}'):
    """``spec.format(v)``, or '-' for a missing value (the summary tables)."""
    return '-' if v is None else spec.format(v)


def default_out(setting, dataset, seed=0, mn_options=None, batch_size=None):
    """``results/NAME``, ``results/NAME@DATASET`` for another dataset, ``+batch=B`` for a batch
    size other than the setting's (so runs of one setting at batch 2, 8, 64 get folders of their
    own), ``+KEY=VALUE`` for each MN option given to the run (characters other than letters,
    digits and ``._=-`` dropped), ``-seedS`` appended for a seed other than 0 (so runs of several
    seeds get folders of their own)."""
    name = setting.name if dataset == setting.dataset else '{}@{}'.format(setting.name, dataset)
    name += batch_suffix(setting.batch_size, batch_size)
    for key in sorted(mn_options or {}):
        name += '+' + re.sub(r'[^A-Za-z0-9_.=-]', '', '{}={}'.format(key, mn_options[key]))
    if seed:
        name += '-seed{}'.format(seed)
    return os.path.join('results', name)


def batch_suffix(setting_batch, batch_size):
    """``'+batch=B'`` for a run's batch size ``B`` other than its setting's, else ``''``."""
    if batch_size is None or int(batch_size) == int(setting_batch or 0):
        return ''
    return '+batch={}'.format(int(batch_size))


def write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then ``os.replace``)."""
    tmp = os.path.join(os.path.dirname(path) or '.', '.{}.tmp'.format(os.path.basename(path)))
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


def read_json(path, what='file'):
    """The JSON in ``path``; a :class:`RunError` naming the file when it is not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RunError('{} is not valid JSON ({}); the {} is damaged: restore it or rerun'.format(
            path, e, what)) from None
    except UnicodeDecodeError:
        raise RunError('{} is not a text (JSON) file; the {} is damaged: restore it or '
                       'rerun'.format(path, what)) from None


def synchronize(device):
    """Wait for the device's queued work (a no-op on the CPU), e.g. before reading a clock."""
    if device.xp is not numpy:
        device.device.synchronize()


def median_seconds(fn, device, repeats):
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, with the
    device synchronized around each call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def get_device(spec):
    """``chainer.get_device(spec)`` with a one-line error for a bad or unavailable device."""
    try:
        return chainer.get_device(spec)
    except RuntimeError as e:
        if 'cupy' in str(spec):
            raise RunError(
                '--device {}: CuPy/CUDA is not available ({}); install the CuPy of your CUDA '
                "(the package's gpu-cuda12 or gpu-cuda13 extra; `mixnorm-doctor` says which "
                'and why CUDA is unavailable) or use --device @numpy'.format(
                    spec, str(e).splitlines()[-1].split(').')[-1])) from None
        raise RunError('--device {}: {}'.format(spec, ' '.join(str(e).split()))) from None
    except ValueError:
        raise RunError("--device {}: not a chainer device; use '@numpy' or "
                       "'@cupy:N'".format(spec)) from None


class PlainStdout:
    """sys.stdout without the ANSI clear-line code PrintReport writes (for logs and pipes)."""

    def write(self, text):
        if text != '\033[J':
            sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()


def interactive():
    """Whether stdout is a terminal (progress bar and ANSI codes only then)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# -- the folder ----------------------------------------------------------------------------

def snapshot_files(out, suffix=''):
    """``[(number, name)]`` of the snapshots in ``out`` ending in ``suffix`` (e.g. ``_rank1``),
    newest first."""
    pattern = re.compile(r'^{}[a-z]+_(\d+){}$'.format(SNAPSHOT_PREFIX, re.escape(suffix)))
    found = []
    if os.path.isdir(out):
        for name in os.listdir(out):
            m = pattern.match(name)
            if m:
                found.append((int(m.group(1)), name))
    return sorted(found, reverse=True)


def existing_run_files(out):
    """The run files and snapshots ``out`` already holds (sorted names)."""
    if not os.path.isdir(out):
        return []
    return sorted(name for name in os.listdir(out)
                  if name in RUN_FILES or name.startswith(SNAPSHOT_PREFIX) or
                  name.startswith(RECOMPUTED_PREFIX))


def _check_writable(out):
    """The nearest existing folder above ``out`` must be a writable folder."""
    path = os.path.abspath(out)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise RunError('--out {}: {} is a file, not a folder; give a folder path'.format(
            out, path))
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunError('--out {}: cannot create the output folder ({} is not writable); give '
                       'a folder you can write'.format(out, path))


def prepare(out, resume=False, force=False):
    """Check ``out`` before a run (nothing is written). Returns the run files it holds.

    * ``out`` is a file, or cannot be created: :class:`RunError`.
    * ``resume``: ``out`` must hold a run with a snapshot (else :class:`RunError`).
    * otherwise ``out`` must not hold a run, unless ``force`` (its run files are then replaced
      by :func:`create`); other files in it are never touched.
    """
    if resume and force:
        raise RunError('--resume and --force contradict each other: --resume continues the run '
                       'in --out, --force replaces it')
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError('--out {} is a file, not a folder; give a folder path'.format(out))
    _check_writable(out)
    files = existing_run_files(out)
    if resume:
        if not os.path.isfile(os.path.join(out, 'setting.json')):
            raise RunError('--resume: {} holds no run (no setting.json); start it without '
                           '--resume'.format(out))
        if not any(f.startswith(SNAPSHOT_PREFIX) for f in files):
            raise RunError('--resume: {} holds no snapshot (the run stopped before its first '
                           'snapshot); start it again with --force'.format(out))
    elif files and not force:
        raise RunError('{} already holds a run ({}); give --resume to continue it, --force to '
                       'replace it, or another --out'.format(out, ', '.join(files[:4]) + (
                           ', ...' if len(files) > 4 else '')))
    return files


def create(out, force=False):
    """Create ``out``; with ``force`` remove the run files it holds (only those)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunError('--out {}: cannot create the output folder ({})'.format(
            out, e.strerror or e)) from None
    if force:
        for name in existing_run_files(out):
            path = os.path.join(out, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    return out


def write_chainerui_files(out, args_dict):
    """ChainerUI reads a result folder's ``args`` (JSON) and ``log`` files: write ``args`` and
    make ``log`` a link to ``log.json`` (skipped where links are not supported)."""
    write_json(os.path.join(out, 'args'), args_dict)
    link = os.path.join(out, 'log')
    if not os.path.lexists(link):
        try:
            os.symlink('log.json', link)
        except OSError:
            pass


# -- options of a run ----------------------------------------------------------------------

def options_of(record):
    """The run options a ``setting.json`` record holds: its ``options``; for folders of older
    versions, what can be read back (the setting's name, dataset, batch size and seed)."""
    options = dict(record.get('options') or {})
    if 'options' not in record:
        options['name'] = (record.get('setting') or {}).get('name')
    for key in ('dataset', 'batch_size', 'seed'):
        if key not in options and key in record:
            options[key] = record[key]
    return options


def option_name(key):
    if key == 'mn_options':
        return '--mn-option'
    return '--' + key.replace('_', '-')


def compare_options(current, stored):
    """``['--batch-size 16 (the run has 32)', ...]`` for the keys both dicts have whose values
    differ."""
    diffs = []
    for key, value in current.items():
        if key not in stored:
            continue
        old = stored[key]
        if isinstance(old, list) and isinstance(value, tuple):
            value = list(value)
        if old != value:
            diffs.append('{} {} (the run has {})'.format(
                'setting' if key == 'name' else option_name(key), _text(value), _text(old)))
    return diffs


def _text(v):
    if v is None:
        return 'none'
    if isinstance(v, dict):
        return ' '.join('{}={}'.format(k, v[k]) for k in sorted(v)) or 'none'
    if isinstance(v, (list, tuple)):
        return ' '.join(str(x) for x in v) or 'none'
    return str(v)


# -- snapshots -----------------------------------------------------------------------------

class Snapshot(training.Extension):
    """The trainer's snapshot ``template.format(trainer)`` (e.g. ``snapshot_epoch_{.updater.
    epoch}``), written atomically; the ``n_retains`` newest with the same suffix are kept."""

    priority = -100                 # after the LogReport and the recorder (as chainer's)
    name = 'Snapshot'

    def __init__(self, template, suffix='', n_retains=2):
        self.template, self.suffix, self.n_retains = template, suffix, n_retains

    def __call__(self, trainer):
        out = trainer.out
        name = self.template.format(trainer) + self.suffix
        path = os.path.join(out, name)
        tmp = os.path.join(out, '.{}.tmp'.format(name))
        with open(tmp, 'wb') as f:
            chainer.serializers.save_npz(f, trainer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for _, old in snapshot_files(out, self.suffix)[self.n_retains:]:
            os.remove(os.path.join(out, old))


def _check_readable(path):
    """Read every member of the snapshot (zip CRCs), so a damaged file fails before loading."""
    with numpy.load(path, allow_pickle=False) as z:
        for key in z.files:
            z[key]


def read_snapshot_value(path, key):
    with numpy.load(path, allow_pickle=False) as z:
        return z[key]


def newest_readable_snapshot(out, suffix='', warn=None):
    """Path of the newest snapshot in ``out`` that can be read; unreadable newer ones are
    reported through ``warn`` (one line each). :class:`RunError` when none can be read."""
    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    found = snapshot_files(out, suffix)
    bad = []
    for _, name in found:
        path = os.path.join(out, name)
        try:
            _check_readable(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            bad.append(name)
            warn('mixnorm-exp: warning: snapshot {} is unreadable ({}: {}); {}'.format(
                path, type(e).__name__, e, 'trying the previous one' if len(bad) < len(found)
                else 'no other snapshot left'))
            continue
        return path
    if not found:
        raise RunError('--resume: {} holds no snapshot{}; start the run again with --force'
                       .format(out, ' for ' + suffix.strip('_') if suffix else ''))
    raise RunError('--resume: no readable snapshot in {} ({} damaged); start the run again with '
                   '--force'.format(out, ', '.join(bad)))


def load_snapshot(trainer, path):
    """Load the snapshot ``path`` into ``trainer`` (before ``trainer.run()``, so every
    extension's ``initialize`` sees the restored state)."""
    try:
        chainer.serializers.load_npz(path, trainer)
    except KeyError as e:
        raise RunError('--resume: snapshot {} does not match this run (it has no {}); was it '
                       'written by another setting or version? Start a new run with another '
                       '--out'.format(path, e.args[0] if e.args else e)) from None
    except ValueError as e:
        raise RunError('--resume: snapshot {} does not match this run ({}); start a new run '
                       'with another --out'.format(path, e)) from None


def plot_report(*args, **kwargs):
    """``extensions.PlotReport`` whose own trigger is part of the snapshot (chainer's is not: a
    resumed run would plot a point for the first update after the snapshot)."""
    from chainer.training.extensions import PlotReport

    class ResumablePlotReport(PlotReport):
        default_name = 'PlotReport'          # the keys of snapshots of older versions

        def serialize(self, serializer):
            super().serialize(serializer)
            if hasattr(self._trigger, 'serialize'):
                self._trigger.serialize(serializer['_trigger'])

    return ResumablePlotReport(*args, **kwargs)


# -- random state in the snapshot -----------------------------------------------------------

class ResumableShuffle:
    """Order sampler: each epoch's permutation is drawn from ``default_rng([seed, previous
    order's first 16 indices])``. The iterator's snapshot holds the current order, so a resumed
    run shuffles exactly as an uninterrupted one (a RandomState inside the sampler would not be
    part of the snapshot)."""

    def __init__(self, seed=0):
        self.seed = int(seed)

    def __call__(self, current_order, current_position):
        key = [self.seed] + [int(v) for v in numpy.asarray(current_order)[:16]]
        return numpy.random.default_rng(key).permutation(len(current_order))


class _GlobalNumpyRandom:
    """numpy's global RandomState behind the ``get_state``/``set_state`` interface."""

    @staticmethod
    def get_state():
        return numpy.random.get_state()

    @staticmethod
    def set_state(state):
        numpy.random.set_state(state)


GLOBAL_NUMPY_RANDOM = _GlobalNumpyRandom()


class RandomStates(training.Extension):
    """Puts ``numpy.random.RandomState``-like generators (``{name: generator}``, e.g. the
    augmentation's, numpy's global one) into the trainer's snapshot; does nothing when called."""

    trigger = 1, 'epoch'
    name = 'RandomStates'

    def __init__(self, generators):
        self.generators = dict(generators)

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        loading = isinstance(serializer, chainer.serializer.Deserializer)
        for name, gen in self.generators.items():
            kind, keys, pos, has_gauss, cached = gen.get_state()
            keys = numpy.array(keys, dtype=numpy.uint32)
            extra = numpy.array([pos, has_gauss, cached], dtype=numpy.float64)
            s = serializer[name]
            try:
                keys = s('keys', keys)
                extra = s('extra', extra)
            except KeyError:        # a snapshot of an older version: resumable, not exactly
                print('mixnorm-exp: warning: the snapshot holds no state of the {} random '
                      'generator (written by an older version); resuming, but the rest of the '
                      'run will not equal an uninterrupted one bit for bit'.format(name),
                      file=sys.stderr, flush=True)
                continue
            if loading:
                gen.set_state((kind, numpy.asarray(keys, dtype=numpy.uint32), int(extra[0]),
                               int(extra[1]), float(extra[2])))


@contextlib.contextmanager
def seeded_numpy_random(seed):
    """For the block, numpy's global generator has the state of ``RandomState(seed)`` (what
    ``numpy.random.seed(seed)`` would give it: chainer's initializers draw from it); afterwards
    the caller's state is back. Draws and :class:`RandomStates` loads inside the block do not
    leak out of it."""
    saved = numpy.random.get_state()
    numpy.random.set_state(numpy.random.RandomState(seed).get_state())
    try:
        yield
    finally:
        numpy.random.set_state(saved)


# -- one run's folder and its resume protocol ------------------------------------------------

def _call(check):
    return check()


class RunFolder:
    """The folder ``out`` of one run and the resume protocol (the module docstring).

    ``suffix`` ends the names of this process's snapshots (``_rankN`` for ChainerMN ranks).
    After :meth:`open`, ``stored`` is the ``setting.json`` record of the run being resumed (None
    for a new run) and, after :meth:`find_snapshot`, ``snapshot`` the snapshot it continues
    from.
    """

    def __init__(self, out, resume=False, force=False, suffix=''):
        self.out, self.resume, self.force, self.suffix = out, bool(resume), bool(force), suffix
        self.stored = None
        self.snapshot = None

    @property
    def record_path(self):
        return os.path.join(self.out, 'setting.json')

    def open(self, check=_call):
        """Check the folder (:func:`prepare`; run through ``check(fn)``, e.g. on one rank and
        its error raised on all) and, to resume, read its record; returns self."""
        check(lambda: prepare(self.out, self.resume, self.force))
        if self.resume:
            stored = read_json(self.record_path, 'setting.json')
            if not isinstance(stored, dict) or not isinstance(stored.get('setting'), dict):
                raise RunError('--resume: {} has no setting record; it was not written by '
                               'mixnorm-exp run'.format(self.record_path))
            self.stored = stored
        return self

    @property
    def stored_options(self):
        """:func:`options_of` the run being resumed; ``{}`` for a new run."""
        return {} if self.stored is None else options_of(self.stored)

    def fill_options(self, args, keys, defaults):
        """Set each of ``keys`` that ``args`` lacks (None) to the resumed run's value, else to
        ``defaults[key]`` (None when not there); lists become tuples (as argparse gives)."""
        stored = self.stored_options
        for key in keys:
            if getattr(args, key, None) is None:
                value = stored[key] if key in stored else defaults.get(key)
                setattr(args, key, tuple(value) if isinstance(value, list) else value)

    def refuse_changed(self, options, may_change, more=()):
        """A :class:`RunError` naming every option that differs from the resumed run's (and the
        differences ``more``); ``may_change`` says which options may."""
        diffs = compare_options(options, self.stored_options) + list(more)
        if diffs:
            raise RunError('--resume: the options differ from the run in {}: {}; resume with the '
                           "run's options (only {} may change) or start a new run with another "
                           '--out'.format(self.out, '; '.join(diffs), may_change))

    def find_snapshot(self, progress_key):
        """Pick the newest readable snapshot (``snapshot``); returns its ``progress_key`` value
        (e.g. the epochs or updates done) as an int."""
        self.snapshot = newest_readable_snapshot(self.out, self.suffix)
        return int(read_snapshot_value(self.snapshot, progress_key))

    def complete(self, done, total, unit, option, say=True):
        """Whether ``done`` >= ``total`` (nothing to resume); then says so (``say``)."""
        if done < total:
            return False
        if say:
            print('{}: the run is complete ({} of {} {}); nothing was changed (give {} N with '
                  'N > {} to extend it)'.format(self.out, done, total, unit, option, done),
                  flush=True)
        return True

    def load(self, trainer):
        """Load the resumed run's snapshot into ``trainer`` (before ``trainer.run()``)."""
        load_snapshot(trainer, self.snapshot)

    def record(self, record, iteration, device, length):
        """The ``setting.json`` record to write: ``record`` for a new run; for a resumed one the
        stored record with ``length`` (e.g. ``{'epochs': 4}``) and the resume (snapshot,
        ``iteration``, ``device``, command line, versions) added to its ``resumed`` history."""
        if not self.resume:
            return record
        history = self.stored.get('resumed', [])
        history.append(dict({'from': os.path.basename(self.snapshot),
                             'iteration': int(iteration)}, **length, device=str(device),
                            argv=sys.argv, versions=software_versions()))
        return dict(self.stored, **length, resumed=history)

    def write(self, record, chainerui_args):
        """Create the folder (``force``: without its old run files) and write ``setting.json``
        and the ChainerUI files."""
        create(self.out, self.force)
        write_json(self.record_path, record)
        write_chainerui_files(self.out, chainerui_args)
