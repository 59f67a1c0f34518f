"""``mixnorm-exp`` in-process for tests: exit status and captured output of one command."""
from mixnorm_chainer.reproduce import runner


def run_cli(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``runner.main(argv)`` (argparse's SystemExit
    included); output captured before the call is dropped."""
    capsys.readouterr()
    try:
        code = runner.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
