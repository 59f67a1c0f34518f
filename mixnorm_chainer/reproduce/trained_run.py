"""A trained run rebuilt from its folder (:func:`load_run`: the model of a snapshot, with the
run's data) and its batches, for ``mixnorm-exp recompute`` and ``evaluate``
(:mod:`mixnorm_chainer.reproduce.inference`).
"""
import os

import chainer
import numpy

from mixnorm_chainer.reproduce import builders, registry, runfolder, seeds


class RunData:
    """A trained run rebuilt from its folder (:func:`load_run`)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def load_run(folder, snapshot=None, device='@numpy', data_dir=None, need_mn=False):
    """Rebuild the model of a ``mixnorm-exp run`` folder from a snapshot, with its data.

    ``snapshot``: a snapshot file (a path, or a name in ``folder``); default the newest readable
    ``snapshot_epoch_N``. The model is ``builders.build_model`` of the run's setting, dataset
    classes, seed and MN options (``setting.json``), with the model part of the trainer snapshot
    loaded. ``need_mn``: a run without MN layers is an error. One-line :class:`RunError` for
    a folder that holds no run, no snapshot, a DCGAN run or a snapshot that does not fit.
    """
    record_path = os.path.join(folder, 'setting.json')
    if not os.path.isfile(record_path):
        inside = seeds.expand_run_dirs([folder])
        if inside != [folder]:
            raise runfolder.RunError('{} holds the runs of several seeds ({}); give one of them'
                                     .format(folder, ', '.join(os.path.basename(d)
                                                               for d in inside)))
        raise runfolder.RunError('{} is not a run folder (no setting.json); give a folder written '
                                 'by `mixnorm-exp run`'.format(folder))
    record = runfolder.read_json(record_path, 'setting.json')
    if not isinstance(record, dict) or not isinstance(record.get('setting'), dict) \
            or 'name' not in record['setting']:
        raise runfolder.RunError('{} has no setting record; it was not written by mixnorm-exp '
                                 'run'.format(record_path))
    setting = registry.get(record['setting']['name'])
    if setting.model == 'dcgan':
        raise runfolder.RunError('{} is a DCGAN run ({}); recompute and evaluate handle '
                                 'classification runs only'.format(folder, setting.name))
    if need_mn and not setting.is_mn:
        raise runfolder.RunError('nothing to recompute: the run {} ({}) has no MN layers'.format(
            folder, setting.name))
    options = runfolder.options_of(record)
    dataset = options.get('dataset') or setting.dataset
    seed = int(options.get('seed') or 0)
    # a ChainerMN run: every rank's snapshot holds the model (rank 0's is read)
    path = snapshot_path(folder, snapshot, '_rank0' if record.get('communicator') else '')
    device = runfolder.get_device(device)
    train, test, n_classes = builders.load_data(dataset, data_dir, options.get('input_size'),
                                                seed)
    if options.get('train_limit'):
        train = train[:options['train_limit']]
    if options.get('test_limit'):
        test = test[:options['test_limit']]
    with runfolder.seeded_numpy_random(seed):   # as mixnorm-exp run (the weights are loaded anyway)
        model = builders.build_model(setting, n_classes, seed=seed,
                                     mn_options=options.get('mn_options'))
    try:
        chainer.serializers.load_npz(path, model, path='updater/model:main/')
    except KeyError as e:
        raise runfolder.RunError('snapshot {} does not fit the run\'s model (it has no {}); was '
                                 'it written by another setting or version?'.format(
                                     path, e.args[0] if e.args else e)) from None
    except ValueError as e:
        raise runfolder.RunError('snapshot {} does not fit the run\'s model ({})'.format(
            path, ' '.join(str(e).split()))) from None
    device.use()
    model.to_device(device)
    return RunData(folder=folder, record=record, options=options, setting=setting,
                   dataset=dataset, seed=seed, snapshot=path, device=device, model=model,
                   train=train, test=test, n_classes=n_classes,
                   batch_size=int(options.get('batch_size') or setting.batch_size),
                   test_batch_size=int(options.get('test_batch_size') or 500))


def snapshot_path(folder, snapshot, suffix=''):
    if snapshot is not None:
        for path in (snapshot, os.path.join(folder, snapshot)):
            if os.path.isfile(path):
                return path
        raise runfolder.RunError('--snapshot {}: no such file (neither as given nor in {})'
                                 .format(snapshot, folder))
    if not runfolder.snapshot_files(folder, suffix):
        raise runfolder.RunError('{} holds no snapshot (snapshot_epoch_N{}); train the run first '
                                 '(mixnorm-exp run, or --resume it)'.format(folder, suffix))
    try:
        return runfolder.newest_readable_snapshot(folder, suffix)
    except runfolder.RunError:
        raise runfolder.RunError('{} holds no readable snapshot (all damaged); give one with '
                                 '--snapshot or rerun'.format(folder)) from None


def training_batches(run, n_batches, device=None):
    """The first ``n_batches`` full batches (the run's batch size) of the run's training set in
    the order of ``default_rng(seed).permutation``, without augmentation, as ``(x, t)`` on
    the run's device (fewer when the training set holds fewer full batches)."""
    size = run.batch_size
    available = len(run.train) // size
    if available == 0:
        raise runfolder.RunError('the training set ({} images) is smaller than the run\'s batch '
                                 'size {}'.format(len(run.train), size))
    order = numpy.random.default_rng(run.seed).permutation(len(run.train))
    return [chainer.dataset.concat_examples(
        [run.train[int(i)] for i in order[b * size:(b + 1) * size]], device or run.device)
        for b in range(min(n_batches, available))]


def evaluation_batches(run, device=None):
    """The run's test set in order, in batches of its test batch size, as ``(x, t)``."""
    size = run.test_batch_size
    return [chainer.dataset.concat_examples(
        [run.test[i] for i in range(start, min(start + size, len(run.test)))],
        device or run.device) for start in range(0, len(run.test), size)]


def save_model(model, path):
    """``save_npz(path, model)`` written atomically (a hidden temporary file, fsync,
    ``os.replace``); loadable with ``chainer.serializers.load_npz(path, model)``."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder or '.', '.{}.tmp'.format(name))
    try:
        with open(tmp, 'wb') as f:
            chainer.serializers.save_npz(f, model)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
