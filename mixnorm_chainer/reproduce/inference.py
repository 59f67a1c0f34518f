"""The paper's other inference strategies (Section 3.2), "precise BN" for MN, and their CLI glue.

Test mode normalizes with the queue of the last T fitted mixtures (Eq. 38-39,
:mod:`mixnorm_chainer.queue`). Section 3.2 first describes another strategy: "maintain last T
mini-batches from the training stage ... aggregate all instances in the queue into a large pool
of samples and fit a Gaussian mixture model to it", then normalize every test batch with it.
The strategies compared by :func:`evaluate_strategies` (and ``mixnorm-exp evaluate``):

* ``'queue'``: test mode as trained, Eq. 38 over the queue with the decay of Eq. 39 (the
  link's ``inference`` form, ``'consistent'`` by default). For a BN-only model: BN test mode.
* ``'printed'``: the same queue with Eq. 38 as printed (``inference='printed'``).
* ``'pool'``: the pool strategy. A link built with ``pool_rows`` > 0 keeps that many rows of
  each of the last T training batches (:class:`~mixnorm_chainer.MixtureNormalization`);
  :func:`pool_fit` fits one mixture to them (Eq. 26-31) and
  :func:`~mixnorm_chainer.reproduce.refit.store_mixture` makes it the
  queue's only entry.
* ``'recompute'``: like "precise BN": with the final weights, forward N training batches in
  test mode, fit each MN layer's mixture to its inputs and store it (:func:`recompute`).
* ``'aligned'``: the queue's entries averaged component by component
  (:func:`~mixnorm_chainer.queue.aligned_mixture`, moment matching with Eq. 39's decay) into
  one mixture that test mode then uses alone; meant for queues whose entries line up, as
  warm-started fits (``init='previous'``) keep them.
* ``'train-mode'``: each test batch is normalized with its own fitted mixture (the MN layers in
  training mode, Eq. 34-36), BN layers in test mode (their running averages).

A stored mixture is the pair the training step pushes: the fitted GMM (its posteriors are the
rho of Eq. 38, here with one entry rho = nu of Eq. 31) and the Eq. 35-36 statistics of the rows
under the fit's responsibilities. With one queue entry (tau = 1, Eq. 39) test mode is exactly
the training transform of Eq. 34-35 with those statistics, in both forms of Eq. 38.

Every strategy of :func:`evaluate_strategies` runs on a deep copy of the model, so the model's
queues, pools, random generators and BN running averages are unchanged. BN layers are left as
they are by every strategy (their running averages are not recomputed).

The mixtures are refitted by :mod:`mixnorm_chainer.reproduce.refit`; a run's model and data
are rebuilt from its folder by :mod:`mixnorm_chainer.reproduce.trained_run`.

Commands (wired into ``mixnorm-exp`` by :mod:`mixnorm_chainer.reproduce.runner`; also
``python -m mixnorm_chainer.reproduce.inference``):

    mixnorm-exp recompute RUN [--batches N] [--rows-per-batch R] [--snapshot FILE]
                              [--device D] [--data-dir DIR]
    mixnorm-exp evaluate RUN [RUN ...]
                             [--strategies queue,printed,pool,recompute,train-mode,aligned]
                             [--batches N] [--rows-per-batch R] [--json FILE] [--device D]
                             [--data-dir DIR]
"""
import argparse
import copy
import os
import sys

import chainer
import chainer.functions as F

from mixnorm_chainer.queue import aligned_mixture
from mixnorm_chainer.reproduce import runfolder, seeds
from mixnorm_chainer.reproduce.arguments import ArgumentParser, positive_int, run_command
from mixnorm_chainer.reproduce.refit import (
    mn_links,
    pool_fit,
    predictor_of,
    recompute,
    short_name,
    store_mixture,
)
from mixnorm_chainer.reproduce.trained_run import (
    evaluation_batches,
    load_run,
    save_model,
    snapshot_path,
    training_batches,
)

#: the strategies of :func:`evaluate_strategies`, in the order of the tables
STRATEGIES = ('queue', 'printed', 'pool', 'recompute', 'train-mode', 'aligned')
#: default number of training batches of ``recompute`` and the 'recompute' strategy
DEFAULT_BATCHES = 20


# -- evaluation ------------------------------------------------------------------------------

def _loss_and_accuracy(model, y, t):
    lossfun = getattr(model, 'lossfun', F.softmax_cross_entropy)
    accfun = getattr(model, 'accfun', F.accuracy)
    return float(lossfun(y, t).array), float(accfun(y, t).array)


def evaluate(model, batches, train_mode_mn=False):
    """Test accuracy and loss over ``(x, t)`` batches: ``{'accuracy', 'loss', 'n'}`` (means
    over the examples; accuracy as a fraction).

    The model's predictor runs with ``chainer.config.train = False`` and no graph. With
    ``train_mode_mn`` the MN layers run in training mode (each batch normalized with its own
    fitted mixture, Eq. 34-36) while every other layer (BN) stays in test mode; that is done on
    a deep copy, so the model's queues, pools and random generators are unchanged either way.
    """
    if train_mode_mn:
        model = copy.deepcopy(model)
        for link in mn_links(model).values():
            link.forward = _train_mode_forward(link)
    total = {'loss': 0.0, 'accuracy': 0.0, 'n': 0}
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for x, t in batches:
            loss, accuracy = _loss_and_accuracy(model, predictor_of(model)(x), t)
            n = int(t.shape[0])
            total['loss'] += loss * n
            total['accuracy'] += accuracy * n
            total['n'] += n
    if not total['n']:
        raise ValueError('evaluate: no test batches given')
    return {'accuracy': total['accuracy'] / total['n'], 'loss': total['loss'] / total['n'],
            'n': total['n']}


def _train_mode_forward(link):
    """The link's own forward in training mode (for the 'train-mode' strategy, on a copy)."""
    def forward(x):
        with chainer.using_config('train', True):
            return type(link).forward(link, x)
    return forward


def pool_problem(model):
    """Why the 'pool' strategy is unavailable for the model (one line), or None."""
    links = mn_links(model)
    if not links:
        return 'the model has no MN layers'
    without = [name for name, link in links.items() if not link.pool_rows]
    if without:
        return ('no row pool: {} built with pool_rows=0 (train with --mn-option '
                'pool_rows=N)'.format(', '.join(map(short_name, without))))
    empty = [name for name, link in links.items() if not link.pool.count]
    if empty:
        return 'the row pool of {} is empty (no training step since it was built)'.format(
            ', '.join(map(short_name, empty)))
    return None


def evaluate_strategies(model, test_batches, train_batches=None, strategies=STRATEGIES,
                        n_batches=None, rows_per_batch=None, seed=0):
    """Test accuracy of each inference strategy (see the module docstring).

    Args:
        model: a trained classifier (``L.Classifier``), on the batches' device.
        test_batches: ``(x, t)`` pairs of the test set.
        train_batches: ``(x, t)`` pairs of training data for 'recompute' (its first
            ``n_batches``; default all); without them 'recompute' is unavailable.
        strategies: names from :data:`STRATEGIES`.
        rows_per_batch, seed: of :func:`recompute`; ``seed`` also of :func:`pool_fit`.

    Returns:
        ``{strategy: {'accuracy': fraction, 'loss': mean, 'n': examples}}``, plus
        ``'recomputed'`` (what :func:`recompute` returned) for 'recompute' and ``'pool'``
        (``{name: {'rows': rows fitted, 'bytes': the pool's memory}}``) for 'pool'; a
        strategy that does not apply is ``{'unavailable': reason}`` (all but 'queue' for a
        model without MN layers, 'queue' and 'printed' for an empty queue, 'pool' without row
        pools, 'recompute' without training batches). Every strategy runs on a deep copy: the
        model is unchanged.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError('unknown strategy {}; the strategies are {}'.format(
            ', '.join(map(repr, unknown)), ', '.join(STRATEGIES)))
    test_batches = list(test_batches)
    links = mn_links(model)
    empty = [short_name(name) for name, link in links.items() if not link.queue.count]
    results = {}
    for strategy in strategies:
        if strategy != 'queue' and not links:
            results[strategy] = {'unavailable': 'the model has no MN layers'}
            continue
        if strategy in ('queue', 'printed', 'aligned') and empty:
            results[strategy] = {'unavailable': 'the queue of {} is empty (no training step '
                                 'since it was built)'.format(', '.join(empty))}
            continue
        if strategy == 'pool' and pool_problem(model):
            results[strategy] = {'unavailable': pool_problem(model)}
            continue
        if strategy == 'recompute' and not train_batches:
            results[strategy] = {'unavailable': 'no training batches given'}
            continue
        if strategy == 'train-mode':
            results[strategy] = evaluate(model, test_batches, train_mode_mn=True)
            continue
        work = copy.deepcopy(model)
        extra = {}
        if strategy == 'printed':
            for link in mn_links(work).values():
                link.inference = 'printed'
        elif strategy == 'pool':
            extra['pool'] = {}
            for name, link in mn_links(work).items():
                extra['pool'][name] = {'rows': int(link.pool.kept_rows().shape[0]),
                                       'bytes': link.pool.memory_bytes}
                pool_fit(link, seed=seed)
        elif strategy == 'aligned':
            for link in mn_links(work).values():
                q = link.queue
                merged = [aligned_mixture(*mixture, q.count, link.queue_decay)
                          for mixture in (q.fit, q.statistics)]
                store_mixture(link, *[tuple(a[0] for a in m) for m in merged])
        elif strategy == 'recompute':
            extra['recomputed'] = recompute(work, train_batches, n_batches, rows_per_batch,
                                            seed)
        results[strategy] = dict(evaluate(work, test_batches), **extra)
        del work
    return results


# -- the commands --------------------------------------------------------------------------

def _mib(n):
    return '{:.1f} MiB'.format(n / 2 ** 20)


def main_recompute(args, out=None):
    """``mixnorm-exp recompute RUN``: recompute the MN mixtures of a run's snapshot from
    ``--batches`` training batches and write the model to ``RUN/recomputed_N.npz``."""
    out = out or sys.stdout
    run = load_run(args.run, args.snapshot, args.device, args.data_dir, need_mn=True)
    batches = training_batches(run, args.batches)
    done = recompute(run.model, batches, rows_per_batch=args.rows_per_batch, seed=run.seed)
    path = save_model(run.model, os.path.join(run.folder,
                                              'recomputed_{}.npz'.format(len(batches))))
    layers = '; '.join('{} {} rows x {} channels ({}), {} components'.format(
        short_name(name), info['rows'], info['channels'], _mib(info['bytes']),
        info['components']) for name, info in done.items())
    print('{}: MN mixtures of {} recomputed from {} training batches of {} in test mode: {}{}'
          .format(path, os.path.basename(run.snapshot), len(batches), run.batch_size, layers,
                  '' if len(batches) == args.batches else ' (the training set holds only {} '
                  'full batches)'.format(len(batches))), file=out, flush=True)
    return path


def main_evaluate(args, out=None):
    """``mixnorm-exp evaluate RUN [RUN ...]``: test accuracy (%) of each strategy per run, as a
    table (``-``: does not apply), and as JSON with ``--json``."""
    out = out or sys.stdout
    strategies = args.strategies
    folders = seeds.expand_run_dirs(args.runs)     # a folder of --seeds runs: its seeds
    records = []
    for folder in folders:                          # every folder checked before any output
        if not os.path.isfile(os.path.join(folder, 'setting.json')):
            raise runfolder.RunError('{} is not a run folder (no setting.json); give folders '
                                     'written by `mixnorm-exp run`'.format(folder))
        snapshot_path(folder, None)
        records.append(dict(runfolder.read_json(os.path.join(folder, 'setting.json'),
                                                'setting.json'), dir=folder))
    seeds.group_variants(records)                   # one run per variant and seed
    widths = [max(len(s), 7) for s in strategies]
    run_width = max(12, max(len(r) for r in folders))
    print('{:<{}} {:>4} {}'.format('run', run_width, 'seed', ' '.join(
        '{:>{}}'.format(s, w) for s, w in zip(strategies, widths))), file=out, flush=True)
    results, notes, variants = {}, [], {}
    for folder in folders:
        run = load_run(folder, None, args.device, args.data_dir)
        needs_train = 'recompute' in strategies and bool(mn_links(run.model))
        train = training_batches(run, args.batches) if needs_train else None
        found = evaluate_strategies(
            run.model, evaluation_batches(run), train, strategies,
            rows_per_batch=args.rows_per_batch, seed=run.seed)
        if train is not None and len(train) < args.batches:
            notes.append('-  {}: recompute used {} batches (the training set holds only {} full '
                         'batches of {})'.format(folder, len(train), len(train), run.batch_size))
        if not mn_links(run.model):
            notes.append('-  {}: a BN model; its queue column is BN\'s test mode (running '
                         'averages)'.format(folder))
        cells, reasons = [], {}
        for s, w in zip(strategies, widths):
            value = found[s].get('accuracy')
            if value is None:
                reasons.setdefault(found[s]['unavailable'], []).append(s)
            cells.append('{:>{}}'.format(runfolder.format_value(
                None if value is None else 100 * value), w))
        print('{:<{}} {:>4} {}'.format(folder, run_width, run.seed, ' '.join(cells)), file=out,
              flush=True)
        notes += ['-  {}: {} {} not apply ({})'.format(
            folder, ', '.join(names), 'does' if len(names) == 1 else 'do', reason)
            for reason, names in reasons.items()]
        results[folder] = {'setting': run.setting.name, 'seed': run.seed,
                           'snapshot': run.snapshot, 'n_test': len(run.test),
                           'strategies': {s: _json_result(r) for s, r in found.items()}}
        record = runfolder.read_json(os.path.join(folder, 'setting.json'), 'setting.json')
        variants.setdefault(seeds.variant_key(record), (seeds.variant_label(record), []))[1].append(
            found)
    several = [v for v in variants.values() if len(v[1]) > 1]
    if several:
        print('over seeds: median [interval] (seeds)', file=out)
        counts = []
        for label, founds in several:
            cells = []
            for s in strategies:
                values = [None if f[s].get('accuracy') is None else 100 * f[s]['accuracy']
                          for f in founds]
                counts.append(sum(v is not None for v in values))
                cells.append('{} {}'.format(s, seeds.interval_text(values)))
            print('{}: {}'.format(label, '; '.join(cells)), file=out)
        print(seeds.interval_legend(counts), file=out)
    for note in notes:
        print(note, file=out)
    if args.json:
        runfolder.write_json(args.json, results)
    return results


def _json_result(result):
    """A strategy's result for JSON: accuracy in %, loss, examples and the extras."""
    if 'unavailable' in result:
        return dict(result)
    out = dict(result, accuracy=100 * result['accuracy'])
    for key in ('recomputed', 'pool'):
        if key in out:
            out[key] = {short_name(k): v for k, v in out[key].items()}
    return out


# -- the command line ------------------------------------------------------------------------

def strategy_list(text):
    """``'queue,pool'`` -> ``['queue', 'pool']``, each one of :data:`STRATEGIES`."""
    names = [s.strip() for s in str(text).split(',') if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError('{!r}: give a comma-separated list of {}'.format(
            text, ','.join(STRATEGIES)))
    return list(dict.fromkeys(names))


def _common_arguments(p):
    p.add_argument('--batches', type=positive_int, default=DEFAULT_BATCHES,
                   help='training batches (the run\'s batch size, fixed seeded order, no '
                   'augmentation) the mixtures are recomputed from (default {})'.format(
                       DEFAULT_BATCHES))
    p.add_argument('--rows-per-batch', type=positive_int,
                   help='keep only this many rows of each batch per MN layer (evenly spread; '
                   'default all N*H*W rows)')
    p.add_argument('--device', default='@numpy', help="chainer device: '@numpy', '@cupy:0'")
    p.add_argument('--data-dir', help='folder with the CIFAR archive or its extracted folder '
                   '(as for mixnorm-exp run)')


def add_recompute_parser(subparsers):
    """Add the ``recompute`` command to ``subparsers`` (of ``mixnorm-exp``); its ``func`` is
    :func:`main_recompute`."""
    r = subparsers.add_parser(
        'recompute', help="recompute a run's MN mixtures from training batches",
        description='Recompute the MN mixtures of a run from training batches in test mode '
        '(MN\'s "precise BN") and write the model to RUN/recomputed_N.npz '
        '(chainer.serializers.load_npz(path, model)).')
    r.add_argument('run', help='a run folder of mixnorm-exp run')
    r.add_argument('--snapshot', metavar='FILE',
                   help='snapshot to start from (default: the newest readable snapshot_epoch_N)')
    _common_arguments(r)
    r.set_defaults(func=main_recompute)
    return r


def add_evaluate_parser(subparsers):
    """Add the ``evaluate`` command to ``subparsers`` (of ``mixnorm-exp``); its ``func`` is
    :func:`main_evaluate`."""
    e = subparsers.add_parser(
        'evaluate', help='test accuracy of the inference strategies of runs',
        description='Test accuracy (percent) of each inference strategy: {} (see '
        'mixnorm_chainer/reproduce/inference.py).'.format(', '.join(STRATEGIES)))
    e.add_argument('runs', nargs='+', metavar='RUN', help='run folders of mixnorm-exp run')
    e.add_argument('--strategies', type=strategy_list, default=list(STRATEGIES),
                   help='comma-separated subset of {} (default all)'.format(
                       ','.join(STRATEGIES)))
    e.add_argument('--json', metavar='FILE', help='also write the results per run to FILE')
    _common_arguments(e)
    e.set_defaults(func=main_evaluate)
    return e


def main(argv=None):
    """``python -m mixnorm_chainer.reproduce.inference recompute|evaluate ...`` (as
    ``mixnorm-exp``)."""
    parser = ArgumentParser(prog='mixnorm-exp', description=__doc__.split('\n')[0])
    subparsers = parser.add_subparsers(dest='command', required=True)
    add_recompute_parser(subparsers)
    add_evaluate_parser(subparsers)
    args = parser.parse_args(argv)
    return run_command('mixnorm-exp', lambda: args.func(args))


if __name__ == '__main__':
    sys.exit(main())
