"""The frame of a ``tests/mpi`` check: run it on every rank, gather the failures of all ranks,
and have rank 0 write the JSON report to argv[1]; and the error measure the checks share."""
import json
import sys
import traceback

import numpy


def max_err(a, b):
    """max |a - b| in float64; inf when the shapes differ, 0 for empty arrays."""
    a, b = numpy.asarray(a, dtype=numpy.float64), numpy.asarray(b, dtype=numpy.float64)
    if a.shape != b.shape:
        return float('inf')
    return float(numpy.max(numpy.abs(a - b))) if a.size else 0.0


def run(comm, report, checks):
    """Call ``checks()``, which fills ``report`` and appends to ``report['failures']``. An
    exception aborts every rank (the others may be inside a collective). Returns the exit
    status: 0 when no rank failed."""
    try:
        checks()
    except Exception:
        print(f'rank {comm.rank}: ' + traceback.format_exc(), file=sys.stderr, flush=True)
        comm.mpi_comm.Abort(3)
    failures = comm.mpi_comm.allgather(report['failures'])
    report['failures'] = [f for fs in failures for f in fs]
    if comm.rank == 0:
        with open(sys.argv[1], 'w') as f:
            json.dump(report, f, indent=1)
    return 1 if report['failures'] else 0
