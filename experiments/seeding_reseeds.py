"""How often warm-started MN layers reseeded in finished runs (docs/seeding.md).

    python experiments/seeding_reseeds.py RUN_OR_SEEDS_FOLDER [...]

For every run folder (a seed folder, or a folder of ``seedN`` folders), reads the newest
snapshot's warm-start state of each MN layer (``mn_init_state``, saved with ``--mn-option
init=previous``) and prints the steps that were warm-started and those that reseeded, by
reason (:mod:`mixnorm_chainer.warm_start`). A run without that state (another ``init``, or a
snapshot from before the option) is reported as such.
"""
import json
import os
import sys

import numpy

from mixnorm_chainer.reproduce import runfolder
from mixnorm_chainer.warm_start import REASONS


def run_folders(path):
    seeds = sorted(os.path.join(path, d) for d in os.listdir(path)
                   if d.startswith('seed') and os.path.isdir(os.path.join(path, d)))
    return seeds or [path]


def layer_states(folder):
    """``{layer: state}`` from the newest readable snapshot of a run folder."""
    path = runfolder.newest_readable_snapshot(folder)
    with numpy.load(path, allow_pickle=False) as z:
        return {k[:-len('/mn_init_state')]: json.loads(z[k].tobytes().decode())
                for k in z.files if k.endswith('/mn_init_state')}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print('usage: ' + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    missing = [path for path in argv if not os.path.isdir(path)]
    if missing:
        print('seeding_reseeds: not a run folder: {}'.format(', '.join(missing)), file=sys.stderr)
        return 2
    print('{:<58} {:>6} {:>6}  {}'.format('run / layer', 'warm', 'reseed',
                                          ' '.join('{:>8}'.format(r) for r in REASONS)))
    for path in argv:
        for folder in run_folders(path):
            try:
                states = layer_states(folder)
            except runfolder.RunError as e:
                print(f'{folder}: {e}')
                continue
            trained = {layer: state for layer, state in states.items()
                       if state['warm'] or any(state['reseeds'].values())}
            if not trained:
                print(f'{folder}: no warm-started steps (not an init=previous run)')
            for layer, state in sorted(trained.items()):
                name = '{} {}'.format('/'.join(os.path.normpath(folder).split(os.sep)[-2:]),
                                      layer.split('predictor/')[-1])
                print('{:<58} {:>6} {:>6}  {}'.format(
                    name, state['warm'], sum(state['reseeds'].values()),
                    ' '.join('{:>8}'.format(state['reseeds'][r]) for r in REASONS)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
