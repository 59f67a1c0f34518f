"""``mixnorm-exp``: run the paper's experiments by name, and read the paper's tables from logs.

    mixnorm-exp list [--table T]
    mixnorm-exp run NAME [--dataset D] [--data-dir DIR] [--epochs N | --scale F]
                         [--device @numpy|@cupy:0] [--seed S] [--out DIR] [--resume | --force]
    mixnorm-exp summarize DIR [DIR ...] [--csv FILE] [--against DIR ...]
    mixnorm-exp compare DIR [DIR ...] [--against DIR ...]
    mixnorm-exp recompute RUN [--batches N]
    mixnorm-exp evaluate RUN [RUN ...] [--strategies queue,...,train-mode,aligned]
    mixnorm-exp cost [--device ...] [--iters N]
    mixnorm-exp smoke [NAME ...] [--steps N] [--batch-size B] [--input-size S] [--seed S]

The command line only: one parser-building function per command, each with the function that
does the command (``args.func``): :func:`mixnorm_chainer.reproduce.reports.list_settings`,
:func:`mixnorm_chainer.reproduce.training.run` (or ``run_seeds``),
:func:`~mixnorm_chainer.reproduce.reports.summarize`,
:func:`~mixnorm_chainer.reproduce.reports.compare`, the inference commands of
:mod:`mixnorm_chainer.reproduce.inference`, :func:`mixnorm_chainer.reproduce.cost.cost` and
:mod:`mixnorm_chainer.reproduce.smoke`.
The argument types are in :mod:`mixnorm_chainer.reproduce.arguments`.
"""
import os
import sys

from mixnorm_chainer.reproduce import (
    builders,
    cost,
    data_parallel,
    inference,
    reports,
    smoke,
    training,
)
from mixnorm_chainer.reproduce.arguments import (
    ArgumentParser,
    densenet_depth,
    fraction_list,
    int_at_least,
    mn_option,
    nonnegative_int,
    positive_float,
    positive_int,
    run_command,
    seed_list,
)


def build_parser():
    """The parser of ``mixnorm-exp`` and its commands."""
    p = ArgumentParser(prog='mixnorm-exp', description=__doc__.split('\n')[0].replace('``', ''))
    sub = p.add_subparsers(dest='command', required=True)
    add_list_parser(sub)
    add_run_parser(sub)
    add_summarize_parser(sub)
    add_compare_parser(sub)
    inference.add_recompute_parser(sub)
    inference.add_evaluate_parser(sub)
    add_cost_parser(sub)
    add_smoke_parser(sub)
    return p


def add_list_parser(sub):
    ls = sub.add_parser('list', help='the registered settings')
    ls.add_argument('--table', help='only settings of this table (e.g. "Table 2")')
    ls.set_defaults(func=lambda args: reports.list_settings(args.table))
    return ls


def _run(args):
    return training.run_seeds(args) if args.seeds else training.run(args)


def add_run_parser(sub):
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
    r.add_argument('--input-size', type=int_at_least(8), default=None,
                   help='image side for digits (default 16)')
    r.add_argument('--train-limit', type=positive_int,
                   help='use only the first N training images')
    r.add_argument('--test-limit', type=positive_int, help='use only the first N test images')
    r.add_argument('--test-batch-size', type=positive_int,
                   help='images per test-evaluation batch (default 500)')
    r.add_argument('--no-augment', action='store_true', default=None,
                   help='no crop/flip augmentation')
    r.add_argument('--device', default='@numpy', help="chainer device: '@numpy', '@cupy:0'")
    r.add_argument('--seed', type=nonnegative_int,
                   help='seed of the initialization, data order and MN draws (default 0)')
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
    _add_gan_arguments(r.add_argument_group('GAN settings (dcgan-*, Section 4.5)'))
    r.set_defaults(func=_run)
    return r


def _add_gan_arguments(g):
    g.add_argument('--iterations', type=positive_int,
                   help="generator updates (paper: 100000)")
    g.add_argument('--fid-interval', type=positive_int, help='updates between FID evaluations '
                   'and sample grids (paper: 10000)')
    g.add_argument('--fid-samples', type=int_at_least(2),
                   help='generated images per FID (default 10000)')
    g.add_argument('--fid-real-samples', type=int_at_least(2),
                   help='real (training) images for the FID statistics (default: all)')
    g.add_argument('--fid-extractor', choices=('inception', 'small'),
                   help="FID features: 'inception' (default; comparable to published FIDs; "
                   "needs --inception-weights) or 'small' (offline stand-in, not comparable)")
    g.add_argument('--inception-weights', metavar='NPZ',
                   help='FID Inception weights converted with `python -m '
                   'mixnorm_chainer.reproduce.fid convert pt_inception-2015-12-05-6726825d.pth '
                   'NPZ`')
    g.add_argument('--fid-batch-size', type=positive_int,
                   help='images per batch of the FID feature extractor (default 100)')
    g.add_argument('--width', type=positive_int,
                   help="DCGAN channels ch (generator's first map, discriminator's last conv; "
                   'default 512 as chainer-gan-lib)')
    g.add_argument('--log-interval', type=positive_int,
                   help='updates per log entry (default gcd(fid interval, 100))')
    g.add_argument('--snapshot-interval', type=positive_int,
                   help='updates between snapshots (default: the FID interval)')


def _summarize(args):
    reports.summarize(args.dirs, out=open(os.devnull, 'w') if args.csv == '-' else None,
                      csv_path=args.csv, against=args.against)


def add_summarize_parser(sub):
    s = sub.add_parser('summarize', help="print the paper's tables from run folders")
    s.add_argument('dirs', nargs='+', metavar='DIR',
                   help='run folders, or folders of --seeds runs (their seedS folders)')
    s.add_argument('--csv', metavar='FILE',
                   help="also write one row per run as CSV to FILE (for spreadsheets and "
                   "pandas); '-': the CSV on stdout instead of the tables")
    s.add_argument('--against', nargs='+', metavar='DIR',
                   help='compare every run with the run of the same seed among these (instead '
                   "of its setting's baseline)")
    s.set_defaults(func=_summarize)
    return s


def add_compare_parser(sub):
    k = sub.add_parser('compare', help="the paper's Tables 3/5/6 rows: paper | here (seeds, "
                       'interval)')
    k.add_argument('dirs', nargs='+', metavar='DIR',
                   help='run folders, or folders of --seeds runs (their seedS folders)')
    k.add_argument('--against', nargs='+', metavar='DIR',
                   help='compare with the runs of the same seed among these (default: the '
                   "setting's baseline runs among DIRS)")
    k.set_defaults(func=lambda args: reports.compare(args.dirs, against=args.against))
    return k


def add_cost_parser(sub):
    c = sub.add_parser('cost', help='Table 7: DenseNet iterations/sec, BN vs MN')
    c.add_argument('--device', default='@numpy',
                   help="chainer device: '@numpy' (default), '@cupy:0' (the paper's numbers "
                   'are from a GPU)')
    c.add_argument('--iters', type=positive_int, default=10, metavar='N',
                   help='timed iterations per row (default %(default)s)')
    c.add_argument('--warmup', type=nonnegative_int, default=2, metavar='N',
                   help='untimed iterations before them (default %(default)s)')
    c.add_argument('--input-size', type=int_at_least(4), default=32, metavar='PIXELS',
                   help='image side of the random input batch (default %(default)s, as CIFAR)')
    c.add_argument('--batch-sizes', type=positive_int, nargs='*', metavar='B',
                   help="only these of Table 7's batch sizes (64, 128; default both)")
    c.add_argument('--components', type=positive_int, nargs='*', default=[1, 2, 3, 4, 5],
                   metavar='K', help='K values of the MN layer; 1 = BN (default 1 2 3 4 5)')
    c.add_argument('--depth', type=densenet_depth,
                   help="another DenseNet depth (3n + 4, e.g. 7 for a quick run) instead of "
                   "Table 7's DenseNet-20/40; the paper's numbers are then not shown")
    c.set_defaults(func=lambda args: cost.cost(args))
    return c


def add_smoke_parser(sub):
    k = sub.add_parser('smoke', help='does a setting train? a few steps of each on digits, '
                       'on the CPU; exit status 1 when one diverges')
    k.add_argument('names', nargs='*', metavar='NAME',
                   help='settings to check (default: all; the BN row of an MN/GBN row is added)')
    k.add_argument('--steps', type=positive_int, default=smoke.DEFAULT_STEPS,
                   help='training steps (default %(default)s)')
    k.add_argument('--batch-size', type=int_at_least(2), default=smoke.DEFAULT_BATCH,
                   help='images per training step (default %(default)s)')
    k.add_argument('--input-size', type=int_at_least(8), default=None,
                   help='image side for every model (Inception-V3: >= 15, DCGAN: a multiple '
                   'of 8; default: {})'.format(', '.join(
                       '{} {}'.format(m, s) for m, s in smoke.INPUT_SIZE.items())))
    k.add_argument('--seed', type=nonnegative_int, default=0,
                   help='initialization and batch order (default 0)')
    k.add_argument('--mn-option', type=mn_option, action='append', metavar='KEY=VALUE',
                   help="an MN option of the MN rows' layers, repeatable (as for run; not "
                   'for DCGAN)')
    k.add_argument('--width', type=int_at_least(8), default=smoke.DEFAULT_WIDTH,
                   help='DCGAN channels (default %(default)s)')
    k.set_defaults(func=smoke.smoke_command)
    return k


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_command('mixnorm-exp', lambda: args.func(args), interrupted=(
        '; the snapshots are kept: continue with the same command and --resume'
        if args.command == 'run' else ''))


if __name__ == '__main__':
    sys.exit(main())
