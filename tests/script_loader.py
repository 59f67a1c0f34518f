"""Import a script of the repository (``experiments/*.py``, ``figures/*.py``: not a package) as a
module, for tests that call its functions."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relative_path):
    """The module of ``ROOT/relative_path`` (e.g. ``'experiments/seeding_reseeds.py'``)."""
    name = os.path.splitext(os.path.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
