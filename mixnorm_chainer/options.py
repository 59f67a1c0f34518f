"""The options of mixture normalization, validated in one place.

Every entry point that takes them (:class:`~mixnorm_chainer.MixtureNormalization`,
:func:`~mixnorm_chainer.fit_gmm`, :func:`~mixnorm_chainer.mixture_normalization`,
:func:`~mixnorm_chainer.queue_normalization`) checks them with :func:`check`, so a bad value
gets the same one-line ``ValueError`` (the option, what it must be, what was given) wherever it
is passed. The paper's names: K = ``n_components``, "EM iter." = ``em_iters`` (Section 4.2),
T = ``queue_length`` and zeta = ``queue_decay`` (Eq. 38-39), the pruning threshold
``min_weight`` (Section 5.3) and the subsampling ``sample_fraction`` (Section 5.1).
"""
import numbers

#: where gamma and beta act: after Eq. 34 (``'output'``) or inside the statistics (Eq. 37)
AFFINE_PLACEMENTS = ('output', 'statistics')
#: None, or ``'relu'``: Eq. 40's ReLU per component before the aggregation
ACTIVATIONS = (None, 'relu')
#: test mode: Eq. 38 with 1/sqrt(lambda) (``'consistent'``) or as printed, 1/sqrt(tau lambda)
INFERENCE_FORMS = ('consistent', 'printed')
#: where each training step's fit starts: the paper's k-means++ seeding, the AFK-MC² seeding
#: (Section 5.1), or the previous step's mixture (a warm start, :mod:`mixnorm_chainer.warm_start`)
INITS = ('kmeans++', 'afkmc2', 'previous')
#: ``initial_gamma`` values that depend on K (the DenseNet settings: docs/training-speed.md)
GAMMA_RULES = {'1/sqrt(K)': lambda K: 1.0 / K ** 0.5}


def _integer(low):
    def ok(v):
        return isinstance(v, numbers.Real) and int(v) == v and v >= low
    return ok, f'an integer >= {low}', int


def _interval(low, high, closed_low, closed_high):
    def ok(v):
        if not isinstance(v, numbers.Real):
            return False
        return (low <= v if closed_low else low < v) and (v <= high if closed_high else v < high)
    text = '{}{}, {}{}'.format('[' if closed_low else '(', low, high, ']' if closed_high else ')')
    return ok, f'in {text}', float


def _positive(v):
    return isinstance(v, numbers.Real) and v > 0


def _choice(choices):
    return (lambda v: v in choices), f'one of {choices}', None


#: option -> (test, what it must be, conversion)
RULES = {
    'size': _integer(1),
    'n_components': _integer(1),
    'queue_length': _integer(1),
    'em_iters': _integer(0),
    'kmeans_iters': _integer(0),
    'pool_rows': _integer(0),
    'chain_length': _integer(1),
    'reseed_every': _integer(0),
    'reseed_drop': (_positive, '> 0 (nats per channel)', float),
    'eps': (_positive, '> 0', float),
    'reg_covar': (_positive, '> 0 (the variance floor)', float),
    'queue_decay': _interval(0, 1, False, True),
    'sample_fraction': _interval(0, 1, False, True),
    'min_weight': _interval(0, 1, True, False),
    'affine': _choice(AFFINE_PLACEMENTS),
    'activation': _choice(ACTIVATIONS),
    'inference': _choice(INFERENCE_FORMS),
    'init': _choice(INITS),
}

#: what some options are, for their error messages
NOTES = {
    'pool_rows': ' (rows of each training batch kept for the pool strategy; 0: no pool)',
    'inference': ' (the form of Eq. 38 in test mode)',
    'init': ' (where each training fit starts)',
    'chain_length': " (AFK-MC²'s Markov chain per centre)",
    'reseed_every': ' (0: only when the rule asks)',
}


def check(name, value, label=None):
    """``value`` as option ``name`` takes it (ints as int, numbers as float), or a one-line
    ValueError: ``"<label> must be <what>; got <value>"`` (``label`` defaults to ``name``)."""
    ok, what, convert = RULES[name]
    try:
        valid = bool(ok(value))
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f'{label or name} must be {what}{NOTES.get(name, "")}; got {value!r}')
    return value if convert is None else convert(value)


def check_all(**options):
    """:func:`check` of every keyword; returns them converted, as a dict in keyword order."""
    return {name: check(name, value) for name, value in options.items()}


def split_em_iters(em_iters, kmeans_iters=None):
    """The paper's "EM iter." -> (k-means iterations, EM iterations), "the same number of
    iterations at two phases" (Section 4.2); an odd count gives the extra one to EM.
    ``kmeans_iters`` (0..em_iters) overrides the split: the rest are EM iterations."""
    em_iters = check('em_iters', em_iters)
    if kmeans_iters is None:
        return em_iters // 2, em_iters - em_iters // 2
    kmeans_iters = check('kmeans_iters', kmeans_iters)
    if kmeans_iters > em_iters:
        raise ValueError(f'kmeans_iters must be an integer in [0, em_iters={em_iters}] (the '
                         f'rest of "EM iter." are EM iterations); got {kmeans_iters!r}')
    return kmeans_iters, em_iters - kmeans_iters


def initial_gamma_value(initial_gamma, n_components):
    """``initial_gamma`` with a rule of :data:`GAMMA_RULES` replaced by its value for
    ``n_components``; anything else (None, a number, an initializer) is returned as it is."""
    if isinstance(initial_gamma, str):
        if initial_gamma not in GAMMA_RULES:
            raise ValueError('initial_gamma must be a number, an initializer or one of {}; got '
                             '{!r}'.format(', '.join(map(repr, GAMMA_RULES)), initial_gamma))
        return GAMMA_RULES[initial_gamma](n_components)
    return initial_gamma
