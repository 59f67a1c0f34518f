"""Training a setting: ``mixnorm-exp run NAME`` (:func:`run`) and ``run NAME --seeds ...``
(:func:`run_seeds`).

A run is a ``chainer.training.Trainer`` with an Evaluator, LogReport (``log.json``, and ``log``
linked to it plus ``args`` for ChainerUI), PrintReport (plain text when stdout is not a
terminal), ProgressBar (terminals only), PlotReport (``loss.png``, ``accuracy.png``), a snapshot
every epoch (``snapshot_epoch_*``, written atomically, the two newest kept) and, for MN runs or
with ``--record``, an :class:`~mixnorm_chainer.reproduce.recorder.ActivationRecorder`
(``recording.npz``).

Run folders (:mod:`mixnorm_chainer.reproduce.runfolder`): a folder that already holds a run is
refused unless ``--resume`` (continue it) or ``--force`` (replace its run files); the default
folder ``results/NAME`` gets ``-seedS`` for a seed S other than 0. ``--resume`` takes the
options not given from ``setting.json`` and refuses given ones that differ (only ``--epochs`` of
an exponential schedule, ``--device``, ``--data-dir`` and ``--no-progress`` may change); a
complete run is reported and left as it is; otherwise the newest readable snapshot is loaded
before training starts (model, optimizer, MN queues and generators, iterator position and
shuffle order, learning-rate schedule, augmentation and recorder generators, log entries), so
the resumed run equals the uninterrupted one bit for bit (on the CPU). ``setting.json`` records
the setting, the options and every resume. DCGAN settings (``dcgan-c10-BN``/``-MN``, Section
4.5) are trained by :func:`mixnorm_chainer.reproduce.gan.run` for ``--iterations`` updates with
FID every ``--fid-interval``.
"""
import argparse
import math
import os
import sys

import chainer
from chainer import training
from chainer.training import extensions

from mixnorm_chainer.reproduce import builders, data_parallel, registry, runfolder
from mixnorm_chainer.reproduce.arguments import fraction_list
from mixnorm_chainer.reproduce.datasets import augment
from mixnorm_chainer.reproduce.recorder import DEFAULT_FRACTIONS, ActivationRecorder
from mixnorm_chainer.reproduce.seeds import ACC_KEY

# -- the learning-rate schedule and the length of a run --------------------------------------

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


# -- options ---------------------------------------------------------------------------------

#: options of a run that shape its results, with their defaults (None: see run()); they are
#: stored in setting.json and a resumed run must have the same ones (--epochs may change for
#: an exponential schedule)
RUN_OPTIONS = ('name', 'dataset', 'batch_size', 'input_size', 'train_limit', 'test_limit',
               'test_batch_size', 'no_augment', 'seed', 'record', 'record_fractions',
               'communicator', 'sync_norm', 'mn_options')
OPTION_DEFAULTS = {'test_batch_size': 500, 'no_augment': False, 'seed': 0,
                   'record_fractions': DEFAULT_FRACTIONS, 'sync_norm': True, 'mn_options': {}}
#: what --resume lets change, as its refusal says
MAY_CHANGE = '--epochs (exponential schedules), --device, --data-dir and --no-progress'


def resolve_options(args, setting, folder):
    """Fill the options not given on the command line (None) from the run being resumed
    (:class:`~mixnorm_chainer.reproduce.runfolder.RunFolder` ``folder``) or the defaults;
    returns the options as a dict (RUN_OPTIONS)."""
    folder.fill_options(args, RUN_OPTIONS[1:], dict(OPTION_DEFAULTS, dataset=setting.dataset,
                                                    batch_size=setting.batch_size))
    if isinstance(args.record_fractions, str):     # run() called with a parsed string
        args.record_fractions = fraction_list(args.record_fractions)
    opts = {key: getattr(args, key, None) for key in RUN_OPTIONS}
    opts['mn_options'] = dict(opts['mn_options'] or {})
    opts['record'] = list(opts['record']) if opts['record'] else None
    opts['record_fractions'] = list(opts['record_fractions'])
    return opts


def _mn_option_dict(args):
    """``args.mn_option`` (``[(key, value), ...]`` from ``--mn-option``) as ``args.mn_options``
    (None when not given, so a resumed run takes the stored ones)."""
    pairs = getattr(args, 'mn_option', None)
    if pairs and getattr(args, 'mn_options', None) is None:
        args.mn_options = dict(pairs)
    if getattr(args, 'mn_options', None):        # {} (e.g. a BN run's stored options): none
        setting = registry.get(args.name)
        if not setting.is_mn:
            raise runfolder.RunError('--mn-option: {} has no MN layers{}; give an MN setting'
                                     .format(setting.name, ' (its GN/MGN layers take no MN '
                                             'option)' if setting.norms else ''))
        builders.mn_options_of(setting, args.mn_options)
    return getattr(args, 'mn_options', None)


def _epochs(args, setting, folder):
    """The run's epochs: ``--epochs``/``--scale``, else the resumed run's or the setting's."""
    if folder.resume and args.epochs is None and args.scale is None:
        return int(folder.stored['epochs'])
    return run_epochs(setting, args.epochs, args.scale)


def _resumed_run_is_complete(folder, options, epochs, setting, say):
    """Refuse changed options, find the snapshot to resume; True (said when ``say``) when the
    run already has its ``epochs``."""
    more = []
    if epochs != folder.stored.get('epochs') and setting.schedule[0] != 'exponential':
        more.append('--epochs {} (the run has {}; its {} schedule drops the learning rate at '
                    'fractions of the epochs)'.format(epochs, folder.stored.get('epochs'),
                                                      setting.schedule[0]))
    folder.refuse_changed(options, MAY_CHANGE, more)
    done = folder.find_snapshot('updater/iterator:main/epoch')
    return folder.complete(done, epochs, 'epochs', '--epochs', say=say)


# -- one run ---------------------------------------------------------------------------------

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
    if setting.model == 'dcgan':          # Section 4.5: GAN training (reproduce.gan)
        return _run_gan(args, setting, extra_extensions)
    _mn_option_dict(args)
    out = args.out or runfolder.default_out(setting, args.dataset or setting.dataset,
                                            args.seed or 0, getattr(args, 'mn_options', None),
                                            getattr(args, 'batch_size', None))
    # ChainerMN (under mpiexec): one rank per process; batch_size is the global mini-batch.
    communicator = getattr(args, 'communicator', None)
    comm = data_parallel.create_communicator(communicator) if communicator else None
    rank0 = comm is None or comm.rank == 0
    folder = runfolder.RunFolder(out, args.resume, getattr(args, 'force', False),
                                 '' if comm is None else '_rank{}'.format(comm.rank))
    folder.open(lambda check: _communicator_check(comm, check))
    options = resolve_options(args, setting, folder)
    epochs = _epochs(args, setting, folder)
    if folder.resume and _resumed_run_is_complete(folder, options, epochs, setting, rank0):
        return out
    rank_batch = data_parallel.per_rank_batch(args.batch_size, comm)
    device = runfolder.get_device(data_parallel.rank_device(args.device, comm))
    device.use()
    train, test, n_classes, generators = _data(args, comm, rank_batch)
    # chainer's initializers draw from numpy's global generator: seeded for the model, and for
    # the whole training, so that any draw during it is seeded and resumable as well
    with runfolder.seeded_numpy_random(args.seed):
        model, optimizer = _model_and_optimizer(args, setting, options, n_classes, comm, device)
        trainer = _trainer(args, setting, epochs, model, optimizer, train, test, comm,
                           rank_batch, device, folder)
        for extension, trigger in extra_extensions:
            trainer.extend(extension, trigger=trigger)
        if comm is not None:
            trainer.extend(data_parallel.check_resumed_ranks(comm), trigger=(1, 'epoch'))
        if rank0:                         # logs, reports and recordings: rank 0 only
            _add_reports(trainer, args, setting, model, generators)
        trainer.extend(runfolder.RandomStates(generators))
        record = _setting_record(args, setting, options, epochs, train, test, rank_batch,
                                 device, comm)
        if folder.resume:
            folder.load(trainer)
            _check_same_data(folder, record)
        record = folder.record(record, trainer.updater.iteration, device, {'epochs': epochs})
        if rank0:
            folder.write(record, dict(options, epochs=epochs, out=out))
            _print_start(args, setting, record, epochs, _iterations_per_epoch(train, rank_batch),
                         rank_batch, comm, out,
                         trainer.updater.iteration if folder.resume else None)
        else:
            os.makedirs(out, exist_ok=True)
        return _run_trainer(trainer, comm)


def _run_gan(args, setting, extra_extensions):
    if getattr(args, 'communicator', None):
        raise ValueError('--communicator is not supported for the DCGAN settings')
    if getattr(args, 'mn_option', None):
        raise ValueError('--mn-option is not supported for the DCGAN settings')
    from mixnorm_chainer.reproduce import gan
    return gan.run(args, setting, extra_extensions)


def _data(args, comm, rank_batch):
    """This rank's training and test sets (limited, scattered over the ranks, augmented) and
    the class count, with the random generators to snapshot (numpy's, the augmentation's)."""
    train, test, n_classes = builders.load_data(args.dataset, args.data_dir, args.input_size,
                                                args.seed)
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
                                 .format(args.batch_size, len(train), '' if comm is None else
                                         ' per rank, batch {} per rank'.format(rank_batch)))
    generators = {'numpy': runfolder.GLOBAL_NUMPY_RANDOM}
    if args.dataset != 'digits' and not args.no_augment:
        train = augment(train, pad=4, flip=True, seed=_rank_seed(args, comm))
        generators['augment'] = train._transform.rng
    return train, test, n_classes, generators


def _rank_seed(args, comm):
    return args.seed + (0 if comm is None else comm.rank)


def _model_and_optimizer(args, setting, options, n_classes, comm, device):
    model = builders.build_model(setting, n_classes, seed=args.seed,
                                 mn_options=options['mn_options'])
    if comm is not None and args.sync_norm:
        model = data_parallel.synchronize_normalization(model, comm)
    model.to_device(device)
    optimizer = builders.build_optimizer(setting, model)
    if comm is not None:
        import chainermn
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    return model, optimizer


def _trainer(args, setting, epochs, model, optimizer, train, test, comm, rank_batch, device,
             folder):
    """The trainer (in ``folder``) with its evaluator, learning-rate schedule and
    snapshots."""
    order = runfolder.ResumableShuffle(_rank_seed(args, comm))
    train_iter = chainer.iterators.SerialIterator(train, rank_batch, order_sampler=order)
    test_iter = chainer.iterators.SerialIterator(test, args.test_batch_size, repeat=False,
                                                 shuffle=False)
    updater = training.StandardUpdater(train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=folder.out)
    evaluator = extensions.Evaluator(test_iter, model, device=device)
    if comm is not None:
        import chainermn
        evaluator = chainermn.create_multi_node_evaluator(evaluator, comm)
    trainer.extend(evaluator)
    shift, trigger = schedule_extension(setting, epochs, _iterations_per_epoch(train, rank_batch))
    trainer.extend(shift, trigger=trigger)
    trainer.extend(runfolder.Snapshot('snapshot_epoch_{.updater.epoch}', folder.suffix),
                   trigger=(1, 'epoch'))
    return trainer


def _iterations_per_epoch(train, rank_batch):
    return int(math.ceil(len(train) / rank_batch))


def _add_reports(trainer, args, setting, model, generators):
    """The log, printed and plotted reports, the progress bar and the recorder (whose
    generator joins ``generators``)."""
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
        generators['recorder'] = recorder._rng


def _setting_record(args, setting, options, epochs, train, test, rank_batch, device, comm):
    """The ``setting.json`` record of a new run."""
    ranks = 1 if comm is None else comm.size
    record = {'setting': setting.to_dict(), 'dataset': args.dataset, 'epochs': epochs,
              'batch_size': args.batch_size,
              'iterations_per_epoch': _iterations_per_epoch(train, rank_batch),
              'n_train': len(train) * ranks, 'n_test': len(test) * ranks, 'seed': args.seed,
              'device': str(device), 'argv': sys.argv,
              'versions': runfolder.software_versions(), 'options': options}
    if comm is not None:
        record['communicator'] = {'name': args.communicator, 'size': comm.size,
                                  'sync_norm': bool(args.sync_norm)}
    return record


def _check_same_data(folder, record):
    """A resumed run must see the data sizes it was started with."""
    sizes = [k for k in ('n_train', 'n_test', 'iterations_per_epoch')
             if k in folder.stored and folder.stored[k] != record[k]]
    if sizes:
        raise runfolder.RunError('--resume: the data differ from the run in {} ({}); resume '
                                 'with the same data'.format(folder.out, ', '.join(
                                     '{} {} (the run has {})'.format(k, record[k],
                                                                     folder.stored[k])
                                     for k in sizes)))


def _print_start(args, setting, record, epochs, iters_per_epoch, rank_batch, comm, out,
                 resumed_at):
    """The run's first line (``record``: what ``setting.json`` gets)."""
    print('{}: {} on {} ({} train / {} test), {} epoch{} x {} iterations, batch {}{}, out {}{}'
          .format(setting.name, setting.model, args.dataset, record['n_train'],
                  record['n_test'], epochs, '' if epochs == 1 else 's', iters_per_epoch,
                  args.batch_size,
                  '' if comm is None else ' ({} per rank x {} ranks{})'.format(
                      rank_batch, comm.size, '' if args.sync_norm else ', unsynchronized'),
                  out, '' if resumed_at is None else ', resumed at iteration {}'.format(
                      resumed_at)), flush=True)


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


# -- several seeds ---------------------------------------------------------------------------

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
    base = args.out or runfolder.default_out(setting, args.dataset or setting.dataset, 0,
                                             _mn_option_dict(args),
                                             getattr(args, 'batch_size', None))
    if os.path.isfile(os.path.join(base, 'setting.json')):
        raise runfolder.RunError('{} holds a run of one seed; give the seed runs another --out '
                                 '(they go to OUT/seedS)'.format(base))
    plan = _seed_plan(args, base)
    # with --resume, seeds not started yet take the options of a started one
    template = next((runfolder.read_json(os.path.join(out, 'setting.json'), 'setting.json')
                     for _, out, resume, _ in plan if resume), None)
    outs = []
    for index, (seed, out, resume, force) in enumerate(plan):
        print('== seed {} ({} of {}): {}{} =='.format(
            seed, index + 1, len(plan), out, ', resumed' if resume else
            ', restarted (no snapshot yet)' if force and args.resume else ''), flush=True)
        one = argparse.Namespace(**vars(args))
        one.seed, one.seeds, one.out, one.resume, one.force = seed, None, out, resume, force
        if args.resume and not resume and isinstance(template, dict):
            _take_options(one, template)
        outs.append(run(one, extra_extensions))
    print('{} seed{} in {}: `mixnorm-exp summarize {}` (with the baseline\'s folder) prints them '
          'per seed and over seeds'.format(len(outs), 's' if len(outs) > 1 else '', base, base),
          flush=True)
    return outs


def _seed_plan(args, base):
    """``[(seed, folder, resume, force)]``, every folder checked (:func:`runfolder.prepare`):
    with ``--resume`` a seed with a snapshot is resumed, one without restarted."""
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
    return plan


def _take_options(one, template):
    """The options ``one`` lacks from a started seed's record ``template`` (not its seed)."""
    stored = runfolder.options_of(template)
    for key in RUN_OPTIONS[1:]:
        if key != 'seed' and getattr(one, key, None) is None and key in stored:
            setattr(one, key, stored[key])
    if one.epochs is None and one.scale is None and 'epochs' in template:
        one.epochs = int(template['epochs'])
