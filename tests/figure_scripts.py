"""Import a ``figures/figureN.py`` script as a module (the scripts are not a package)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(n):
    """The module ``figures/figure{n}.py``."""
    name = 'figure{}'.format(n)
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'figures',
                                                                     name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
