"""experiments/seeding_launch_count.py at a tiny size: the counts of the seedings' fits and
layer steps (launches on the xp and the kernel path, host synchronizations) are plausible."""
import os

import cuda_kernel_harness as harness
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_counting_script():
    return load_script('experiments/seeding_launch_count.py')


def test_seeding_launch_counts():
    harness.require_cxx()
    table = load_counting_script().count_all(shape=(4, 8, 4, 4))
    for path in ('xp', 'kernels'):
        warm, seeded = table['fit, warm start'][path], table['fit, k-means++'][path]
        assert 0 < warm['launches'] < seeded['launches'], (path, warm, seeded)
        assert table['fit, AFK-MC²'][path]['launches'] < seeded['launches']
    assert table['fit, k-means++']['kernels']['launches'] < \
        table['fit, k-means++']['xp']['launches']
    assert all(row['xp']['cuda_kernels'] == 0 < row['kernels']['cuda_kernels']
               for row in table.values()), table
    steps = {part: row for part, row in table.items() if part.startswith('layer step')}
    assert len(steps) == 5
    for part, row in steps.items():
        for path in ('xp', 'kernels'):
            counts = row[path]
            assert counts['syncs'] > 0 and counts['chainer'] == 0, (part, path, counts)
            # a step is more than its fit: the transform, its gradient and the queue
            assert counts['launches'] > table['fit, warm start'][path]['launches']
    # the pruning decision synchronizes in every fit; the warm start adds its own decision
    assert all(any('gmm.prune' in site for site in row['kernels']['sync_sites'])
               for row in table.values())
    assert any('gmm.warm_start_em' in site
               for site in table['fit, warm start']['kernels']['sync_sites'])
    assert [steps[p]['kernels']['decision'] for p in (
        'layer step, previous (warm)', 'layer step, previous (reseed: every)')] == \
        ['warm', 'every']
    assert steps['layer step, previous (warm fit discarded)']['kernels']['decision'] in (
        'drop', 'collapse')
