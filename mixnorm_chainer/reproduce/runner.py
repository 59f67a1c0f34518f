"""``mixnorm-exp``: run the paper's experiments by name, and read the paper's tables from logs.

    mixnorm-exp list [--table T]
    mixnorm-exp run NAME [--dataset D] [--data-dir DIR] [--epochs N | --scale F]
                         [--device @numpy|@cupy:0] [--seed S] [--out DIR] [--resume | --force]
    mixnorm-exp summarize DIR [DIR ...] [--csv FILE] [--against DIR ...]
    mixnorm-exp compare DIR [DIR ...] [--against DIR ...]
    mixnorm-exp recompute RUN [--batches N]
    mixnorm-exp evaluate RUN [RUN ...] [--strategies queue,printed,pool,recompute,train-mode]
    mixnorm-exp cost [--device ...] [--iters N]

A run is a ``chainer.training.Trainer`` with an Evaluator, LogReport (``log.json``, and ``log``
linked to it plus ``args`` for ChainerUI), PrintReport (plain text when stdout is not a
terminal), ProgressBar (terminals only), PlotReport (``loss.png``, ``accuracy.png``), a snapshot
every epoch (``snapshot_epoch_*``, written atomically, the two newest kept) and, for MN runs or
with ``--record``, an :class:`~mixnorm_chainer.reproduce.recorder.ActivationRecorder` (``recording.npz``).

Run folders (:mod:`mixnorm_chainer.reproduce.runfolder`): a folder that already holds a run is refused
unless ``--resume`` (continue it) or ``--force`` (replace its run files); the default folder
``results/NAME`` gets ``-seedS`` for a seed S other than 0. ``--resume`` takes the options not
given from ``setting.json`` and refuses given ones that differ (only ``--epochs`` of an
exponential schedule, ``--device``, ``--data-dir`` and ``--no-progress`` may change); a complete
run is reported and left as it is; otherwise the newest readable snapshot is loaded before
training starts (model, optimizer, MN queues and generators, iterator position and shuffle
order, learning-rate schedule, augmentation and recorder generators, log entries), so the
resumed run equals the uninterrupted one bit for bit (on the CPU). ``setting.json`` records
the setting, the options and every resume. DCGAN settings (``dcgan-c10-BN``/``-MN``,
Section 4.5) are trained by :func:`mixnorm_chainer.reproduce.gan.run` for ``--iterations`` updates with
FID every ``--fid-interval``.
"""
import argparse
import math
import os
import sys
import time

import chainer
import numpy
from chainer import training
from chainer.training import extensions

from mixnorm_chainer.reproduce import (
    builders,
    data_parallel,
    inference,
    plotting,
    registry,
    runfolder,
    seeds,
)
from mixnorm_chainer.reproduce.builders import build_model, build_optimizer, load_data  # noqa: F401
from mixnorm_chainer.reproduce.datasets import augment
from mixnorm_chainer.reproduce.recorder import DEFAULT_FRACTIONS, ActivationRecorder

ACC_KEY = plotting.ACC_KEY


# -- building blocks ---------------------------------------------------------------------

class ResumableMultistepShift(extensions.MultistepShift):
    """``MultistepShift`` whose ``initialize`` sets the value of the current step, so a run
    resumed after a drop continues with the dropped learning rate (chainer's sets ``init``)."""

    def initialize(self, trainer):
        optimizer = self._optimizer or trainer.updater.get_optimizer('main')
        if self._init is None:
            self._init = getattr(optimizer, self._attr)
        setattr(optimizer, self._attr, self._init * pow(self._gamma, self._current_step))


def schedule_extension(setting, epochs, iters_per_epoch):
    """The learning-rate policy as a trainer extension and its trigger."""
    kind = setting.schedule[0]
    if kind == 'exponential':
        _, rate, every = setting.schedule
        return extensions.ExponentialShift('lr', rate), (every, 'epoch')
    if kind == 'step':
        _, factor, fractions = setting.schedule
        total = epochs * iters_per_epoch
        steps = sorted({max(1, int(round(f * total))) for f in fractions})
        return ResumableMultistepShift('lr', factor, steps, setting.lr), (1, 'iteration')
    raise ValueError('unknown schedule {!r}'.format(setting.schedule))


def run_epochs(setting, epochs=None, scale=None):
    if epochs is not None and scale is not None:
        raise ValueError('give --epochs or --scale, not both')
    if epochs is None:
        epochs = setting.epochs if scale is None else max(1, int(round(setting.epochs * scale)))
    if epochs < 1:
        raise ValueError('epochs must be >= 1; got {}'.format(epochs))
    return epochs


# -- run -----------------------------------------------------------------------------------

#: options of a run that shape its results, with their defaults (None: see run()); they are
#: stored in setting.json and a resumed run must have the same ones (--epochs may change for
#: an exponential schedule)
RUN_OPTIONS = ('name', 'dataset', 'batch_size', 'input_size', 'train_limit', 'test_limit',
               'test_batch_size', 'no_augment', 'seed', 'record', 'record_fractions',
               'communicator', 'sync_norm', 'mn_options')
OPTION_DEFAULTS = {'test_batch_size': 500, 'no_augment': False, 'seed': 0,
                   'record_fractions': DEFAULT_FRACTIONS, 'sync_norm': True, 'mn_options': {}}


def _stored_options(record):
    """The options a run folder's setting.json holds (older folders: what can be read back)."""
    if 'options' in record:
        return dict(record['options'])
    old = {'name': record.get('setting', {}).get('name')}
    for key in ('dataset', 'batch_size', 'seed'):
        if key in record:
            old[key] = record[key]
    return old


def resolve_options(args, setting, stored=None):
    """Fill the options not given on the command line (None) from the run being resumed
    (``stored``) or the defaults; returns the options as a dict (RUN_OPTIONS)."""
    stored = stored or {}
    defaults = dict(OPTION_DEFAULTS, dataset=setting.dataset, batch_size=setting.batch_size)
    for key in RUN_OPTIONS[1:]:
        if getattr(args, key, None) is None:
            value = stored[key] if key in stored else defaults.get(key)
            setattr(args, key, tuple(value) if isinstance(value, list) else value)
    if isinstance(args.record_fractions, str):     # runner.run() called with a parsed string
        args.record_fractions = fraction_list(args.record_fractions)
    opts = {key: getattr(args, key, None) for key in RUN_OPTIONS}
    opts['mn_options'] = dict(opts['mn_options'] or {})
    opts['record'] = list(opts['record']) if opts['record'] else None
    opts['record_fractions'] = list(opts['record_fractions'])
    return opts


def _communicator_check(comm, check):
    """``check()`` on rank 0, its RunError raised on every rank (so no rank races rank 0)."""
    if comm is None:
        return check()
    message, value = None, None
    if comm.rank == 0:
        try:
            value = check()
        except runfolder.RunError as e:
            message = str(e)
    message, value = comm.bcast_obj((message, value) if comm.rank == 0 else None)
    if message:
        raise runfolder.RunError(message)
    return value


def run(args, extra_extensions=()):
    """Train one setting; ``extra_extensions``: (extension, trigger) pairs (for tests).

    Refuses a folder that holds a run unless ``--resume`` or ``--force``; ``--resume`` checks
    the options against setting.json, says so and changes nothing when the run is complete, and
    otherwise continues exactly where the newest readable snapshot left off.
    """
    setting = registry.get(args.name)
    communicator = getattr(args, 'communicator', None)
    if setting.model == 'dcgan' and communicator:
        raise ValueError('--communicator is not supported for the DCGAN settings')
    if setting.model == 'dcgan' and getattr(args, 'mn_option', None):
        raise ValueError('--mn-option is not supported for the DCGAN settings')
    if setting.model == 'dcgan':          # Section 4.5: GAN training (mixnorm_chainer.reproduce.gan)
        from mixnorm_chainer.reproduce import gan
        return gan.run(args, setting, extra_extensions)
    resume, force = bool(args.resume), bool(getattr(args, 'force', False))
    _mn_option_dict(args)
    out = args.out or runfolder.default_out(setting, args.dataset or setting.dataset,
                                            args.seed or 0, getattr(args, 'mn_options', None))
    # ChainerMN (under mpiexec): one rank per process; batch_size is the global mini-batch.
    comm = data_parallel.create_communicator(communicator) if communicator else None
    rank0 = comm is None or comm.rank == 0
    suffix = '' if comm is None else '_rank{}'.format(comm.rank)
    _communicator_check(comm, lambda: runfolder.prepare(out, resume, force))
    stored = None
    if resume:
        stored = runfolder.read_json(os.path.join(out, 'setting.json'), 'setting.json')
        if not isinstance(stored, dict) or not isinstance(stored.get('setting'), dict):
            raise runfolder.RunError('--resume: {} has no setting record; it was not written '
                                     'by mixnorm-exp run'.format(os.path.join(out,
                                                                              'setting.json')))
    options = resolve_options(args, setting, stored and _stored_options(stored))
    dataset, batch_size = args.dataset, args.batch_size
    if resume and args.epochs is None and args.scale is None:
        epochs = int(stored['epochs'])
    else:
        epochs = run_epochs(setting, args.epochs, args.scale)
    snapshot_path = None
    if resume:
        diffs = runfolder.compare_options(options, _stored_options(stored))
        if epochs != stored.get('epochs') and setting.schedule[0] != 'exponential':
            diffs.append('--epochs {} (the run has {}; its {} schedule drops the learning rate '
                         'at fractions of the epochs)'.format(epochs, stored.get('epochs'),
                                                              setting.schedule[0]))
        runfolder.refuse_changed_options(out, diffs, '--epochs (exponential schedules), '
                                         '--device, --data-dir and --no-progress')
        snapshot_path = runfolder.newest_readable_snapshot(out, suffix)
        done = int(runfolder.read_snapshot_value(snapshot_path, 'updater/iterator:main/epoch'))
        if done >= epochs:
            if rank0:
                print('{}: the run is complete ({} of {} epochs); nothing was changed (give '
                      '--epochs N with N > {} to extend it)'.format(out, done, epochs, done),
                      flush=True)
            return out
    rank_batch = data_parallel.per_rank_batch(batch_size, comm)
    device = runfolder.get_device(data_parallel.rank_device(args.device, comm))
    device.use()

    train, test, n_classes = load_data(dataset, args.data_dir, args.input_size, args.seed)
    if args.train_limit:
        train = train[:args.train_limit]
    if args.test_limit:
        test = test[:args.test_limit]
    if comm is not None:                  # each rank gets an equal share
        import chainermn
        train = chainermn.scatter_dataset(train, comm, shuffle=True, seed=args.seed)
        test = chainermn.scatter_dataset(test, comm)
    if rank_batch > len(train):
        raise runfolder.RunError('--batch-size {} is larger than the training set ({} images{}'
                                 '); give a smaller --batch-size or a larger --train-limit'
                                 .format(batch_size, len(train), '' if comm is None else
                                         ' per rank, batch {} per rank'.format(rank_batch)))
    rank_seed = args.seed + (0 if comm is None else comm.rank)
    random_states = {'numpy': runfolder.GLOBAL_NUMPY_RANDOM}
    if dataset != 'digits' and not args.no_augment:
        train = augment(train, pad=4, flip=True, seed=rank_seed)
        random_states['augment'] = train._transform.rng

    numpy.random.seed(args.seed)          # chainer's initializers draw from numpy's RNG
    model = build_model(setting, n_classes, seed=args.seed, mn_options=options['mn_options'])
    if comm is not None and args.sync_norm:
        model = data_parallel.synchronize_normalization(model, comm)
    model.to_device(device)
    optimizer = build_optimizer(setting, model)
    if comm is not None:
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    order = runfolder.ResumableShuffle(rank_seed)
    train_iter = chainer.iterators.SerialIterator(train, rank_batch, order_sampler=order)
    test_iter = chainer.iterators.SerialIterator(test, args.test_batch_size, repeat=False,
                                                 shuffle=False)
    updater = training.StandardUpdater(train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=out)
    iters_per_epoch = int(math.ceil(len(train) / rank_batch))

    evaluator = extensions.Evaluator(test_iter, model, device=device)
    if comm is not None:
        evaluator = chainermn.create_multi_node_evaluator(evaluator, comm)
    trainer.extend(evaluator)
    shift, trigger = schedule_extension(setting, epochs, iters_per_epoch)
    trainer.extend(shift, trigger=trigger)
    trainer.extend(runfolder.Snapshot('snapshot_epoch_{.updater.epoch}', suffix),
                   trigger=(1, 'epoch'))
    for extension, trigger in extra_extensions:
        trainer.extend(extension, trigger=trigger)
    if comm is not None:
        trainer.extend(data_parallel.check_resumed_ranks(comm), trigger=(1, 'epoch'))
    if rank0:                             # logs, reports and recordings: rank 0 only
        trainer.extend(extensions.observe_lr())
        trainer.extend(extensions.LogReport(trigger=(1, 'epoch'), filename='log.json'))
        interactive = runfolder.interactive()
        trainer.extend(extensions.PrintReport(
            ['epoch', 'iteration', 'main/loss', 'main/accuracy', 'validation/main/loss',
             ACC_KEY, 'lr', 'elapsed_time'],
            out=sys.stdout if interactive else runfolder.PlainStdout()))
        if extensions.PlotReport.available():
            trainer.extend(runfolder.plot_report(['main/loss', 'validation/main/loss'], 'epoch',
                                                 filename='loss.png'))
            trainer.extend(runfolder.plot_report(['main/accuracy', ACC_KEY], 'epoch',
                                                 filename='accuracy.png'))
        if not args.no_progress and interactive:
            trainer.extend(extensions.ProgressBar(update_interval=10))
        if args.record or setting.is_mn:
            recorder = ActivationRecorder(model.predictor, args.record or (),
                                          args.record_fractions, seed=args.seed)
            trainer.extend(recorder)
            random_states['recorder'] = recorder._rng
    trainer.extend(runfolder.RandomStates(random_states))

    ranks = 1 if comm is None else comm.size
    record = {'setting': setting.to_dict(), 'dataset': dataset, 'epochs': epochs,
              'batch_size': batch_size, 'iterations_per_epoch': iters_per_epoch,
              'n_train': len(train) * ranks, 'n_test': len(test) * ranks, 'seed': args.seed,
              'device': str(device), 'argv': sys.argv, 'versions': software_versions(),
              'options': options}
    if comm is not None:
        record['communicator'] = {'name': communicator, 'size': comm.size,
                                  'sync_norm': bool(args.sync_norm)}
    if resume:
        runfolder.load_snapshot(trainer, snapshot_path)
        sizes = [k for k in ('n_train', 'n_test', 'iterations_per_epoch')
                 if k in stored and stored[k] != record[k]]
        if sizes:
            raise runfolder.RunError('--resume: the data differ from the run in {} ({}); '
                                     'resume with the same data'.format(out, ', '.join(
                                         '{} {} (the run has {})'.format(k, record[k], stored[k])
                                         for k in sizes)))
        history = stored.get('resumed', [])
        history.append({'from': os.path.basename(snapshot_path),
                        'iteration': int(updater.iteration), 'epochs': epochs,
                        'device': str(device), 'argv': sys.argv,
                        'versions': software_versions()})
        record = dict(stored, epochs=epochs, resumed=history)
    if rank0:
        runfolder.create(out, force)
        runfolder.write_json(os.path.join(out, 'setting.json'), record)
        runfolder.write_chainerui_files(out, dict(options, epochs=epochs, out=out))
        print('{}: {} on {} ({} train / {} test), {} epoch{} x {} iterations, batch {}{}, out {}{}'
              .format(setting.name, setting.model, dataset, record['n_train'],
                      record['n_test'], epochs, '' if epochs == 1 else 's', iters_per_epoch,
                      batch_size,
                      '' if comm is None else ' ({} per rank x {} ranks{})'.format(
                          rank_batch, comm.size, '' if args.sync_norm else ', unsynchronized'),
                      out, ', resumed at iteration {}'.format(updater.iteration) if resume
                      else ''), flush=True)
    else:
        os.makedirs(out, exist_ok=True)
    return _run_trainer(trainer, comm)


def _mn_option_dict(args):
    """``args.mn_option`` (``[(key, value), ...]`` from ``--mn-option``) as ``args.mn_options``
    (None when not given, so a resumed run takes the stored ones)."""
    pairs = getattr(args, 'mn_option', None)
    if pairs and getattr(args, 'mn_options', None) is None:
        args.mn_options = dict(pairs)
    if getattr(args, 'mn_options', None):        # {} (e.g. a BN run's stored options): none
        setting = registry.get(args.name)
        if not setting.is_mn:
            raise runfolder.RunError('--mn-option: {} has no MN layers; give an MN setting'
                                     .format(setting.name))
        builders.mn_options_of(setting, args.mn_options)
    return getattr(args, 'mn_options', None)


def run_seeds(args, extra_extensions=()):
    """``run --seeds S1,S2,...``: one run per seed in ``OUT/seedS`` (OUT: ``--out`` or the
    default folder of the run without a seed), one after the other, each exactly as ``run
    --seed S --out OUT/seedS``. Every folder is checked before any training starts; with
    ``--resume`` complete seeds are reported, stopped ones resumed, and seeds not started yet
    (or stopped before their first snapshot) started. Returns the seed folders."""
    setting = registry.get(args.name)
    if getattr(args, 'communicator', None):
        raise runfolder.RunError('--seeds is not supported with --communicator; launch one '
                                 'mpiexec per seed with --seed S')
    if args.seed is not None:
        raise runfolder.RunError('give --seed S (one run) or --seeds S1,S2,... (one folder per '
                                 'seed), not both')
    if args.resume and getattr(args, 'force', False):
        runfolder.prepare(args.out or '.', True, True)      # the one-line contradiction
    _mn_option_dict(args)
    base = args.out or runfolder.default_out(setting, args.dataset or setting.dataset, 0,
                                             args.mn_options)
    if os.path.isfile(os.path.join(base, 'setting.json')):
        raise runfolder.RunError('{} holds a run of one seed; give the seed runs another --out '
                                 '(they go to OUT/seedS)'.format(base))
    plan = []
    for seed in args.seeds:
        out = os.path.join(base, 'seed{}'.format(seed))
        resume, force = bool(args.resume), bool(getattr(args, 'force', False))
        if resume:
            files = runfolder.existing_run_files(out) if os.path.isdir(out) else []
            has_snapshot = any(f.startswith(runfolder.SNAPSHOT_PREFIX) for f in files)
            resume, force = has_snapshot, bool(files) and not has_snapshot
        runfolder.prepare(out, resume, force)
        plan.append((seed, out, resume, force))
    # with --resume, seeds not started yet take the options of a started one
    template = None
    for _, out, resume, _ in plan:
        if resume and template is None:
            template = runfolder.read_json(os.path.join(out, 'setting.json'), 'setting.json')
    outs = []
    for index, (seed, out, resume, force) in enumerate(plan):
        print('== seed {} ({} of {}): {}{} =='.format(
            seed, index + 1, len(plan), out, ', resumed' if resume else
            ', restarted (no snapshot yet)' if force and args.resume else ''), flush=True)
        one = argparse.Namespace(**vars(args))
        one.seed, one.seeds, one.out, one.resume, one.force = seed, None, out, resume, force
        if args.resume and not resume and isinstance(template, dict):
            stored = _stored_options(template)
            for key in RUN_OPTIONS[1:]:
                if key != 'seed' and getattr(one, key, None) is None and key in stored:
                    setattr(one, key, stored[key])
            if one.epochs is None and one.scale is None and 'epochs' in template:
                one.epochs = int(template['epochs'])
        outs.append(run(one, extra_extensions))
    print('{} seed{} in {}: `mixnorm-exp summarize {}` (with the baseline\'s folder) prints them '
          'per seed and over seeds'.format(len(outs), 's' if len(outs) > 1 else '', base, base),
          flush=True)
    return outs


def _run_trainer(trainer, comm):
    try:
        trainer.run()
    except Exception:
        if comm is not None and comm.size > 1:
            # the other ranks may wait in a collective for this one: end them all
            import traceback
            traceback.print_exc()
            comm.mpi_comm.Abort(1)
        raise
    return trainer.out


def output_dir(out, setting, dataset, seed=0):
    """``out`` or the default folder (:func:`runfolder.default_out`), created."""
    return runfolder.create(out or runfolder.default_out(setting, dataset, seed))


get_device = runfolder.get_device
software_versions = runfolder.software_versions


# -- summarize -----------------------------------------------------------------------------

def load_run(directory):
    """setting.json of a run as a dict, with its evaluated log entries under ``log``."""
    run = plotting.load_run(directory)
    return dict(run.record, log=run.log, dir=run.dir)


def max_accuracy_at(log, epochs, fractions=(0.25, 0.5, 0.75, 1.0)):
    """Maximum test accuracy (%) over the epochs up to each fraction (Tables 2, 4)."""
    out = []
    for frac in fractions:
        limit = int(math.ceil(frac * epochs - 1e-9))
        accs = [e[ACC_KEY] for e in log if e['epoch'] <= limit]
        out.append(100 * max(accs) if accs else None)
    return out


#: first iteration at which test accuracy (%) >= target (Tables 3, 5, 6); None: never
steps_to_reach = seeds.first_reach


format_value = runfolder.format_value
_fmt = format_value


def check_run_dirs(directories, warn=None):
    """The run folders to summarize, each once (repeats are reported and dropped); a folder
    whose setting.json or log.json cannot be read is a one-line :class:`runfolder.RunError`
    naming the file; a folder without log.json yet is reported (its row shows '-')."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    seen, dirs = {}, []
    for d in directories:
        key = os.path.realpath(d)
        if key in seen:
            warn('mixnorm-exp: warning: {} is given twice (as {}); summarized once'.format(
                d, seen[key]))
            continue
        seen[key] = d
        path = os.path.join(d, 'setting.json')
        if not os.path.isfile(path):
            raise runfolder.RunError('{}: not a run folder (no setting.json; run folders are '
                                     'written by `mixnorm-exp run NAME --out DIR`)'.format(d))
        record = runfolder.read_json(path, 'setting.json')
        setting = record.get('setting') if isinstance(record, dict) else None
        missing = [k for k in ('name', 'table') if not isinstance(setting, dict) or k not in
                   setting]
        if missing or 'dataset' not in record:
            raise runfolder.RunError('{} lacks {}; it was not written by mixnorm-exp run '
                                     '(restore it or rerun)'.format(path, ', '.join(
                                         ['setting.' + k for k in missing] +
                                         ([] if 'dataset' in record else ['dataset']))))
        log_path = os.path.join(d, 'log.json')
        if os.path.isfile(log_path):
            log = runfolder.read_json(log_path, 'log.json')
            if not isinstance(log, list):
                raise runfolder.RunError('{} is not a list of log entries; restore it or '
                                         'rerun'.format(log_path))
        else:
            warn('mixnorm-exp: warning: {} has no log.json yet (no finished epoch or '
                 'evaluation); its numbers show as -'.format(d))
        dirs.append(d)
    return dirs


CSV_FIELDS = ('dir', 'name', 'table', 'dataset', 'seed', 'variant', 'epochs', 'epochs_done',
              'iterations', 'acc_25', 'acc_50', 'acc_75', 'acc_100', 'max_acc', 'final_acc',
              'mean_error', 'baseline', 'baseline_dir', 'target', 'steps_to_baseline',
              'fewer_steps', 'error_ratio', 'best_fid', 'best_fid_update', 'paper_acc_25',
              'paper_acc_50', 'paper_acc_75', 'paper_acc_100', 'paper_max_acc',
              'paper_steps_to_baseline', 'paper_best_fid', 'paper_best_fid_update')


def write_csv(rows, path):
    """The summary rows (:data:`CSV_FIELDS`) as CSV to ``path`` ('-': stdout). Empty: missing,
    or (``steps_to_baseline``, ``fewer_steps``) the baseline's best never reached while
    ``target`` is given."""
    import csv
    if path == '-':
        f = sys.stdout
    else:
        f = open(path, 'w', newline='')
    try:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        w.writeheader()
        for row in rows:
            w.writerow({k: '' if row.get(k) is None or (isinstance(row[k], float) and
                                                         math.isinf(row[k])) else row[k]
                        for k in CSV_FIELDS})
    finally:
        if f is not sys.stdout:
            f.close()


def _run_label(r, multi_seed):
    """A run's row label: its variant (:func:`seeds.variant_label`, without the dataset) and
    `` sS`` for a seed when the variant has several or the seed is not 0."""
    seed = seeds.seed_of(r)
    return seeds.variant_label(r, with_dataset=False) + (
        ' s{}'.format(seed) if multi_seed or seed else '')


def find_baseline(r, candidates, against=False):
    """The baseline run of ``r`` among ``candidates``: the run of its setting's ``baseline``
    (its own name for a baseline setting) on the same dataset with the same seed, data options
    (:data:`seeds.DATA_OPTIONS`) and epochs; with ``against`` any candidate of the same dataset
    and seed. None when there is none."""
    options = seeds.options_of(r)
    name = r['setting'].get('baseline') or r['setting']['name']
    for c in candidates:
        other = seeds.options_of(c)
        if c['dataset'] != r['dataset'] or other.get('seed') != options.get('seed'):
            continue
        if against:
            return c
        if (c['setting']['name'] == name and c.get('epochs') == r.get('epochs') and
                not seeds.variant_key(c)[2] and
                all(other.get(k) == options.get(k) for k in seeds.DATA_OPTIONS)):
            return c
    return None


def print_columns(header, rows, out):
    """``header`` and ``rows`` (tuples of cells) as left-aligned columns two spaces apart."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header,) + tuple(rows):
        print('  '.join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip(), file=out)


def incomplete(r):
    """Why run ``r`` cannot count over seeds ('no evaluation yet', 'incomplete: 1 of 3
    epochs'), or None."""
    if not seeds.run_numbers(r['log'])['evaluations']:
        return 'no evaluation yet'
    done = max(e['epoch'] for e in r['log'])
    if r.get('epochs') and done < r['epochs']:
        return 'incomplete: {} of {} epochs'.format(done, r['epochs'])
    return None


def seed_table(runs, against_runs=None, warn=None):
    """Over seeds: ``[(variant label, baseline label, {number: [per-seed values]}, runs)]``
    for every variant among ``runs``, each run paired with the baseline run of its seed. Runs
    without evaluations or with fewer epochs than they were started for are left out (and
    reported through ``warn``)."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    candidates = against_runs if against_runs is not None else runs
    kept = []
    for r in runs:
        why = incomplete(r)
        if why:
            warn('mixnorm-exp: warning: {} is left out of the over-seeds numbers ({})'.format(
                r['dir'], why))
        else:
            kept.append(r)
    table = []
    for members in seeds.group_variants(kept).values():
        values = {k: [] for k in ('best_acc', 'final_acc', 'mean_error', 'steps',
                                  'fewer_steps', 'error_ratio')}
        bases = set()
        for r in members:
            own = seeds.run_numbers(r['log'])
            for k in ('best_acc', 'final_acc', 'mean_error'):
                values[k].append(own[k])
            base = find_baseline(r, candidates, against=against_runs is not None)
            base = None if base is None or incomplete(base) else base
            paired = seeds.paired_numbers(r['log'], base['log']) if base else {}
            steps = paired.get('steps')
            values['steps'].append(math.inf if base and steps is None and
                                   paired.get('target') is not None else steps)
            for k in ('fewer_steps', 'error_ratio'):
                values[k].append(paired.get(k))
            if base:
                bases.add(seeds.variant_label(base, with_dataset=False))
        table.append((seeds.variant_label(members[0]), ', '.join(sorted(bases)) or '-',
                      values, members))
    return table


def print_seed_table(table, out):
    """The over-seeds table of :func:`summarize` (median [95% bootstrap interval] (n))."""
    print('\nover seeds: median [95% bootstrap interval of the median] (seeds; with 3-5 seeds the '
          'interval is their range); steps and mean error paired with the baseline run of the '
          'same seed; never: the baseline\'s best was not reached', file=out)
    header = ('variant', 'baseline', 'best acc (%)', 'final acc (%)', 'mean test error (%)',
              'steps to baseline best', 'fewer steps (%)', 'mean error / baseline')
    rows = []
    for label, base, v, _ in table:
        text = seeds.interval_text
        rows.append((label, base, text(v['best_acc']), text(v['final_acc']),
                     text(v['mean_error']), text(v['steps'], '{:.0f}'),
                     text(v['fewer_steps'], '{:.0f}'), text(v['error_ratio'], '{:.3f}')))
    print_columns(header, rows, out)


def _load_runs(directories):
    directories = check_run_dirs(seeds.expand_run_dirs(directories))
    return [load_run(d) for d in directories]


def summarize(directories, out=None, csv_path=None, against=None):
    """Print Tables 2/4 and 3/5/6 from run directories (a folder of ``--seeds`` runs stands for
    its seed folders), next to the paper's numbers; when a variant has several seeds also the
    over-seeds table (:func:`seed_table`). Runs are compared with the baseline run of the same
    seed (:func:`find_baseline`), or with the runs in ``against``. With ``csv_path`` also one
    CSV row per run (:data:`CSV_FIELDS`)."""
    out = out or sys.stdout
    runs = _load_runs(directories)
    against_runs = _load_runs(against) if against else None
    csv_rows = []
    gan_dirs = [r['dir'] for r in runs if r['setting']['model'] == 'dcgan']
    if gan_dirs:                          # Section 4.5: FID instead of accuracy
        from mixnorm_chainer.reproduce import gan
        gan_runs = gan.summarize(gan_dirs, out=out)
        csv_rows += gan.csv_rows(gan_runs)
        runs = [r for r in runs if r['setting']['model'] != 'dcgan']
    variants = seeds.group_variants(runs)
    multi = {id(r) for members in variants.values() if len(members) > 1 for r in members}
    labels = {id(r): _run_label(r, id(r) in multi) for r in runs}
    width = max([22] + [len(v) + 1 for v in labels.values()])
    groups = {}
    for r in runs:
        key = (r['setting']['table'], r['dataset'])
        groups.setdefault(key, []).append(r)
    for (table, dataset), members in sorted(groups.items()):
        print('\n{} on {}: maximum test accuracy (%) after 25/50/75/100% of the epochs'
              ' (ours | paper)'.format(table, dataset), file=out)
        print('{:<{w}} {:>6} {:>31} | {}'.format('run', 'epochs', 'ours', 'paper', w=width),
              file=out)
        rows_by_dir = {}
        for r in members:
            epochs = r.get('epochs') or len(r['log'])
            ours = max_accuracy_at(r['log'], epochs)
            paper = r['setting'].get('paper', {}).get('acc_at')
            print('{:<{w}} {:>6} {:>31} | {}'.format(
                labels[id(r)], len(r['log']),
                ' '.join('{:>7}'.format(_fmt(v, '{:7.2f}')) for v in ours),
                ' '.join(_fmt(v, '{:7.2f}') for v in paper) if paper else '-', w=width),
                file=out)
            p = r['setting'].get('paper', {})
            own = seeds.run_numbers(r['log'])
            row = {'dir': r['dir'], 'name': r['setting']['name'], 'table': table,
                   'dataset': dataset, 'seed': seeds.seed_of(r),
                   'variant': seeds.variant_label(r), 'epochs': r.get('epochs'),
                   'epochs_done': len(r['log']),
                   'iterations': r['log'][-1]['iteration'] if r['log'] else None,
                   'max_acc': own['best_acc'], 'final_acc': own['final_acc'],
                   'mean_error': own['mean_error'],
                   'paper_max_acc': p.get('max_acc'),
                   'paper_steps_to_baseline': p.get('steps_to_baseline')}
            for frac, v, pv in zip((25, 50, 75, 100), ours, paper or [None] * 4):
                row['acc_{}'.format(frac)], row['paper_acc_{}'.format(frac)] = v, pv
            rows_by_dir[r['dir']] = row
            csv_rows.append(row)
        # baselines may sit in another table's group (GBN rows -> Table 2's BN-2)
        rows = []
        for r in members:
            base = find_baseline(r, against_runs if against_runs is not None else runs,
                                 against=against_runs is not None)
            if base is None or not base['log']:
                continue
            paired = seeds.paired_numbers(r['log'], base['log'])
            best = rows_by_dir[r['dir']]['max_acc']
            base_label = _run_label(base, id(base) in multi or against_runs is not None)
            rows.append((labels[id(r)], base_label, paired['target'], paired['steps'], best,
                         r['setting'].get('paper', {})))
            rows_by_dir[r['dir']].update(
                baseline=base['setting']['name'], baseline_dir=base['dir'],
                target=paired['target'], steps_to_baseline=paired['steps'],
                fewer_steps=paired['fewer_steps'], error_ratio=paired['error_ratio'])
        if rows:
            bw = max([22] + [len(row[1]) for row in rows])
            print('\nsteps to reach the baseline\'s maximum accuracy (ours | paper)', file=out)
            print('{:<{w}} {:<{bw}} {:>8} {:>8} {:>8} | {:>8} {:>8}'.format(
                'run', 'baseline', 'target', 'steps', 'max acc', 'steps', 'max acc', w=width,
                bw=bw), file=out)
            for name, base, target, steps, best, paper in rows:
                print('{:<{w}} {:<{bw}} {:>8} {:>8} {:>8} | {:>8} {:>8}'.format(
                    name, base, _fmt(target), _fmt(steps, '{:d}'), _fmt(best),
                    _fmt(paper.get('steps_to_baseline'), '{:.3g}'),
                    _fmt(paper.get('max_acc')), w=width, bw=bw), file=out)
    if multi:
        print_seed_table(seed_table(runs, against_runs), out)
    if csv_path:
        write_csv(csv_rows, csv_path)
    return runs


#: the table that prints the steps to the baseline of a setting's table (Table 2's rows are
#: in Table 3, Table 4's in Table 5)
STEPS_TABLE = {'Table 2': 'Table 3', 'Table 4': 'Table 5'}


def compare(directories, against=None, out=None):
    """The paper's Tables 3/5/6 rows as "paper | here (n seeds, interval)": for every variant
    among the runs, the steps to its baseline's best test accuracy, the fraction of steps saved
    and the best accuracy, each as the paper prints it and as the median [95% bootstrap
    interval] (seeds) of the runs here (each paired with the baseline run of its seed, or with
    the runs in ``against``). Returns :func:`seed_table`'s rows."""
    out = out or sys.stdout
    runs = [r for r in _load_runs(directories) if r['setting']['model'] != 'dcgan']
    against_runs = _load_runs(against) if against else None
    table = seed_table(runs, against_runs)
    print('paper | here: median [95% bootstrap interval of the median] (seeds); steps to the '
          'baseline\'s best test accuracy, paired by seed', file=out)
    header = ('variant', 'table', 'baseline', 'steps: paper', 'here', 'fewer steps %: paper',
              'here', 'best acc %: paper', 'here')
    rows = []
    table.sort(key=lambda row: (bool(row[3][0]['setting'].get('mn_layers')), row[0]))
    for label, base, v, members in table:
        setting = members[0]['setting']
        paper = setting.get('paper', {})
        steps = paper.get('steps_to_baseline')
        base_setting = registry.SETTINGS.get(setting.get('baseline') or setting['name'])
        base_steps = base_setting.paper.get('steps_to_baseline') if base_setting else None
        fewer = (None if steps is None or not base_steps else
                 100.0 * (1.0 - steps / base_steps))
        where = STEPS_TABLE.get(setting.get('table'), setting.get('table', '-'))
        rows.append((label, where, base,
                     _fmt(steps, '{:.3g}') if steps is not None else
                     ('never' if 'steps_to_baseline' in paper else '-'),
                     seeds.interval_text(v['steps'], '{:.0f}'), _fmt(fewer, '{:.0f}'),
                     seeds.interval_text(v['fewer_steps'], '{:.0f}'), _fmt(paper.get('max_acc')),
                     seeds.interval_text(v['best_acc'])))
    print_columns(header, rows, out)
    if any(m['dataset'] != m['setting']['dataset'] for _, _, _, ms in table for m in ms):
        print('(runs on another dataset than the paper\'s: compare the direction and size of '
              'the effect, not the numbers)', file=out)
    return table


# -- cost (Table 7) ------------------------------------------------------------------------

def densenet_final_channels(depth, growth_rate=12):
    """Channels at a DenseNet's final BN: 16 + 3 * ((depth - 4) // 3) * growth_rate."""
    return 16 + 3 * ((depth - 4) // 3) * growth_rate


def cost(args, out=None):
    """Table 7: iterations/sec of a DenseNet training step, BN vs MN (last BN) with K=2..5.

    With ``--depth`` the rows are the given depth's network (its own final channel count in the
    dim column) for each batch size, without the paper's numbers (they are for other
    networks)."""
    out = out or sys.stdout
    device = get_device(args.device)
    device.use()
    results = []
    if args.depth:
        batches = sorted({b for b, _ in registry.TABLE7})
        configs = [(b, densenet_final_channels(args.depth), args.depth, {}) for b in batches]
    else:
        configs = [(b, dim, registry.TABLE7_DEPTH[dim], paper)
                   for (b, dim), paper in registry.TABLE7.items()]
    configs = [c for c in configs if not args.batch_sizes or c[0] in args.batch_sizes]
    if not configs:
        raise runfolder.RunError('--batch-sizes {}: Table 7 has batch sizes {}'.format(
            ' '.join(map(str, args.batch_sizes)), ' '.join(
                str(b) for b in sorted({b for b, _ in registry.TABLE7}))))
    print('Table 7 on {}: DenseNet training iterations/sec, MN replacing the last BN '
          '(input {}x{}, {} timed iterations after {} warm-up){}'.format(
              device, args.input_size, args.input_size, args.iters, args.warmup,
              '' if not args.depth else '; DenseNet-{} (--depth): the paper\'s numbers are '
              'for DenseNet-20/40 and are not shown'.format(args.depth)), file=out)
    print('{:<6} {:>2} {:>6} {:>5} {:>10} {:>14}'.format(
        'model', 'K', 'batch', 'dim', 'it/s', 'paper (TitanX)'), file=out)
    for batch, dim, depth, paper in configs:
        for K in args.components:
            setting = registry.Setting(
                name='cost', table='Table 7', dataset='cifar100',
                model='densenet{}'.format(depth), label='BN' if K == 1 else 'MN',
                mn_layers=() if K == 1 else ('final',), n_components=max(K, 1), em_iters=2,
                optimizer='nesterov', lr=0.1, weight_decay=1e-4)
            numpy.random.seed(0)
            model = build_model(setting, 100, seed=0)
            model.to_device(device)
            opt = build_optimizer(setting, model)
            xp = device.xp
            x = xp.asarray(numpy.random.default_rng(0).normal(
                size=(batch, 3, args.input_size, args.input_size)).astype(numpy.float32))
            t = xp.asarray(numpy.random.default_rng(1).integers(0, 100, batch).astype(
                numpy.int32))
            for _ in range(args.warmup):
                opt.update(model, x, t)
            runfolder.synchronize(device)
            start = time.perf_counter()
            for _ in range(args.iters):
                opt.update(model, x, t)
            runfolder.synchronize(device)
            rate = args.iters / (time.perf_counter() - start)
            results.append({'depth': depth, 'batch': batch, 'dim': dim, 'K': K, 'its': rate,
                            'paper': paper.get(K)})
            print('{:<6} {:>2} {:>6} {:>5} {:>10.3f} {:>14}'.format(
                'BN' if K == 1 else 'MN', K, batch, dim, rate, _fmt(paper.get(K))), file=out,
                flush=True)
    return results


# -- command line --------------------------------------------------------------------------

def _number_type(kind, low, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('{!r} is not a{} {}'.format(
                text, 'n' if kind is int else '', 'integer' if kind is int else 'number')
            ) from None
        if not value >= low or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError('must be {}; got {}'.format(what, text))
        return value
    parse.__name__ = what
    return parse


positive_int = _number_type(int, 1, 'a positive integer (>= 1)')
nonnegative_int = _number_type(int, 0, 'an integer >= 0')


def positive_float(text):
    value = _number_type(float, 0, 'a number > 0')(text)
    if value <= 0:
        raise argparse.ArgumentTypeError('must be a number > 0; got {}'.format(text))
    return value


def fraction_list(text):
    """'0.2,0.4' -> (0.2, 0.4), each in (0, 1]."""
    try:
        values = tuple(float(f) for f in str(text).split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a comma-separated list of numbers in '
                                         '(0, 1], e.g. 0.2,0.4,0.6'.format(text)) from None
    if not all(0 < f <= 1 for f in values):
        raise argparse.ArgumentTypeError('fractions must lie in (0, 1]; got {}'.format(text))
    return values


def seed_list(text):
    """'0,1,2' or '0-4' (inclusive) or a mix ('0-2,7') -> (0, 1, 2, 7): distinct seeds >= 0."""
    seeds = []
    for part in str(text).split(','):
        low, dash, high = part.strip().partition('-')
        try:
            values = range(int(low), int(high) + 1) if dash else [int(low)]
        except ValueError:
            raise argparse.ArgumentTypeError('{!r} is not a list of seeds; give e.g. 0,1,2 or '
                                             '0-4'.format(text)) from None
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError('{!r}: seeds are integers >= 0 and a range is '
                                             'LOW-HIGH with LOW <= HIGH'.format(text))
        seeds += [v for v in values if v not in seeds]
    return tuple(seeds)


def mn_option(text):
    try:
        return builders.parse_mn_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def densenet_depth(text):
    depth = positive_int(text)
    if depth < 7 or (depth - 4) % 3:
        raise argparse.ArgumentTypeError('a DenseNet depth is 3n + 4 with n >= 1 (7, 10, ..., '
                                         '40, 100); got {}'.format(text))
    return depth


def build_parser():
    p = runfolder.ArgumentParser(prog='mixnorm-exp', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)

    ls = sub.add_parser('list', help='the registered settings')
    ls.add_argument('--table', help='only settings of this table (e.g. "Table 2")')

    r = sub.add_parser('run', help='train one setting')
    r.add_argument('name', help='setting name (see `mixnorm-exp list`)')
    r.add_argument('--dataset', choices=('cifar10', 'cifar100', 'digits'),
                   help="override the setting's dataset (digits: offline, small)")
    r.add_argument('--data-dir', help='folder with cifar-10-python.tar.gz / '
                   'cifar-100-python.tar.gz or their extracted folders (only this folder is '
                   'read; without it CIFAR is downloaded to chainer\'s dataset cache)')
    r.add_argument('--epochs', type=positive_int, help='run this many epochs (the first part '
                   "of the paper's schedule; step drops scale with the run)")
    r.add_argument('--scale', type=positive_float,
                   help="epochs = round(scale * paper's epochs)")
    r.add_argument('--batch-size', type=positive_int, help="override the paper's batch size")
    r.add_argument('--input-size', type=_number_type(int, 8, 'an integer >= 8'), default=None,
                   help='image side for digits (default 16)')
    r.add_argument('--train-limit', type=positive_int,
                   help='use only the first N training images')
    r.add_argument('--test-limit', type=positive_int, help='use only the first N test images')
    r.add_argument('--test-batch-size', type=positive_int, help='default 500')
    r.add_argument('--no-augment', action='store_true', default=None,
                   help='no crop/flip augmentation')
    r.add_argument('--device', default='@numpy', help="chainer device: '@numpy', '@cupy:0'")
    r.add_argument('--seed', type=nonnegative_int, help='default 0')
    r.add_argument('--seeds', type=seed_list, metavar='S1,S2,...',
                   help='one run per seed (e.g. 0,1,2 or 0-4) in OUT/seedS, one after the '
                   'other; summarize/compare aggregate over them')
    r.add_argument('--mn-option', type=mn_option, action='append', metavar='KEY=VALUE',
                   help='an MN option of every MN layer, repeatable: {} (the default folder '
                   'name gets +KEY=VALUE)'.format('; '.join(
                       '{}: {}'.format(k, v[0]) for k, v in builders.MN_OPTIONS.items())))
    r.add_argument('--out', help='output folder (default results/NAME, results/NAME@DATASET '
                   'for another dataset, with -seedS appended for a seed S other than 0)')
    r.add_argument('--resume', action='store_true',
                   help='continue the run in --out from its newest snapshot (options not given '
                   'are taken from its setting.json; given ones must match it)')
    r.add_argument('--force', action='store_true',
                   help='replace the run already in --out (its logs, snapshots and recordings '
                   'are deleted)')
    r.add_argument('--no-progress', action='store_true',
                   help='no progress bar (it is shown only on a terminal anyway)')
    r.add_argument('--communicator', choices=data_parallel.COMMUNICATORS,
                   help='data-parallel ChainerMN training, launched as `mpiexec -n P '
                   'mixnorm-exp run ...` (--batch-size stays the global mini-batch)')
    r.add_argument('--no-sync-norm', dest='sync_norm', action='store_false', default=None,
                   help='with --communicator: each rank normalizes (BN and MN) its own share '
                   'of the batch instead of the global batch')
    r.add_argument('--record', nargs='+', metavar='LAYER',
                   help='capture the input of these normalization layers (e.g. conv2) and, for '
                   'MN layers, their fitted mixture into recording.npz (Figures 1, 8); MN '
                   'runs always record their per-iteration component counts (Figure 9)')
    r.add_argument('--record-fractions', type=fraction_list,
                   help='fractions of training at which to capture (comma-separated; default '
                   '0.2,0.4,0.6,0.8,1.0)')
    g = r.add_argument_group('GAN settings (dcgan-*, Section 4.5)')
    g.add_argument('--iterations', type=positive_int,
                   help="generator updates (paper: 100000)")
    g.add_argument('--fid-interval', type=positive_int, help='updates between FID evaluations '
                   'and sample grids (paper: 10000)')
    g.add_argument('--fid-samples', type=_number_type(int, 2, 'an integer >= 2'),
                   help='generated images per FID (default 10000)')
    g.add_argument('--fid-real-samples', type=_number_type(int, 2, 'an integer >= 2'),
                   help='real (training) images for the FID statistics (default: all)')
    g.add_argument('--fid-extractor', choices=('inception', 'small'),
                   help="FID features: 'inception' (default; comparable to published FIDs; "
                   "needs --inception-weights) or 'small' (offline stand-in, not comparable)")
    g.add_argument('--inception-weights', metavar='NPZ',
                   help='FID Inception weights converted with `python -m mixnorm_chainer.reproduce.fid '
                   'convert pt_inception-2015-12-05-6726825d.pth NPZ`')
    g.add_argument('--fid-batch-size', type=positive_int, help='default 100')
    g.add_argument('--width', type=positive_int,
                   help="DCGAN channels ch (generator's first map, discriminator's last conv; "
                   'default 512 as chainer-gan-lib)')
    g.add_argument('--log-interval', type=positive_int,
                   help='updates per log entry (default gcd(fid interval, 100))')
    g.add_argument('--snapshot-interval', type=positive_int,
                   help='updates between snapshots (default: the FID interval)')

    s = sub.add_parser('summarize', help="print the paper's tables from run folders")
    s.add_argument('dirs', nargs='+')
    s.add_argument('--csv', metavar='FILE',
                   help="also write one row per run as CSV to FILE (for spreadsheets and "
                   "pandas); '-': the CSV on stdout instead of the tables")

    s.add_argument('--against', nargs='+', metavar='DIR',
                   help='compare every run with the run of the same seed among these (instead '
                   "of its setting's baseline)")

    k = sub.add_parser('compare', help="the paper's Tables 3/5/6 rows: paper | here (seeds, "
                       'interval)')
    k.add_argument('dirs', nargs='+', help='run folders or folders of --seeds runs')
    k.add_argument('--against', nargs='+', metavar='DIR',
                   help='compare with the runs of the same seed among these (default: the '
                   "setting's baseline runs among DIRS)")

    inference.add_parsers(sub)          # recompute, evaluate: the inference strategies

    c = sub.add_parser('cost', help='Table 7: DenseNet iterations/sec, BN vs MN')
    c.add_argument('--device', default='@numpy')
    c.add_argument('--iters', type=positive_int, default=10)
    c.add_argument('--warmup', type=nonnegative_int, default=2)
    c.add_argument('--input-size', type=_number_type(int, 4, 'an integer >= 4'), default=32)
    c.add_argument('--batch-sizes', type=positive_int, nargs='*', help='subset of 64 128')
    c.add_argument('--components', type=positive_int, nargs='*', default=[1, 2, 3, 4, 5],
                   help='K values; 1 = BN')
    c.add_argument('--depth', type=densenet_depth,
                   help='override the DenseNet depth (for quick runs; 3n + 4)')
    return p


def _gbn(s):
    """'GBN cvar(0.75): conv3' for a GBN setting's layer column, '-' for the all-BN ones."""
    if not s.gbn_layers:
        return '-'
    alpha = '' if s.gbn_alpha is None else '({:g})'.format(s.gbn_alpha)
    return 'GBN {}{}: {}'.format(s.gbn_deviation, alpha, ','.join(s.gbn_layers))


def list_settings(table=None, out=None):
    out = out or sys.stdout
    rows = [s for s in registry.SETTINGS.values() if table is None or s.table == table]
    if not rows:
        tables = sorted({s.table for s in registry.SETTINGS.values()}, key=plotting.natural_key)
        raise runfolder.RunError('--table {!r}: no such table; the tables are {}'.format(
            table, ', '.join(repr(t) for t in tables)))
    print('{:<22} {:<12} {:<9} {:<13} {:<26} {:>2} {:>2} {:<9} {:>6} {:>7} {:>5} {:>4}'
          .format('name', 'table', 'data', 'model', 'MN or GBN layers', 'K', 'EM', 'optim', 'lr',
                  'wd', 'batch', 'ep'), file=out)
    for s in rows:
        print('{:<22} {:<12} {:<9} {:<13} {:<26} {:>2} {:>2} {:<9} {:>6g} {:>7g} {:>5} {:>4}'
              .format(s.name, s.table, s.dataset, s.model, ','.join(s.mn_layers) or _gbn(s),
                      s.n_components if s.is_mn else '-', s.em_iters if s.is_mn else '-',
                      s.optimizer, s.lr, s.weight_decay, s.batch_size,
                      s.epochs if s.iterations is None else '{:g}K'.format(s.iterations / 1e3)),
              file=out)
    for s in rows:
        if s.mn_options:
            print('{}: MN option{} {} (not in the paper; docs/training-speed.md)'.format(
                s.name, 's' if len(s.mn_options) > 1 else '',
                ' '.join('{}={}'.format(k, v) for k, v in s.mn_options)), file=out)
    return rows


def error_text(e):
    """One line for an exception the user can fix."""
    if isinstance(e, OSError) and e.strerror:
        text = '{}{}'.format(e.strerror, ': {}'.format(e.filename) if e.filename else '')
    elif isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    else:
        text = str(e) or type(e).__name__
    return ' '.join(text.split())


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'list':
            list_settings(args.table)
        elif args.command == 'run':
            run_seeds(args) if args.seeds else run(args)
        elif args.command == 'summarize':
            summarize(args.dirs, out=open(os.devnull, 'w') if args.csv == '-' else None,
                      csv_path=args.csv, against=args.against)
        elif args.command == 'compare':
            compare(args.dirs, against=args.against)
        elif args.command in ('recompute', 'evaluate'):
            args.func(args)
        elif args.command == 'cost':
            cost(args)
        sys.stdout.flush()                # a closed pipe surfaces here, not at exit
    except BrokenPipeError:               # e.g. `mixnorm-exp list | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (KeyError, ValueError, OSError, RuntimeError) as e:
        print('mixnorm-exp: error: {}'.format(error_text(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('mixnorm-exp: interrupted{}'.format(
            '; the snapshots are kept: continue with the same command and --resume'
            if args.command == 'run' else ''), file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
