"""``MixtureNormalization``: the Link (parameters, queue, train/test switch) over the MN function.

Training mode (``chainer.config.train``): fit the layer's GMM to the batch rows outside the
graph (:func:`mixnorm_chainer.fit_gmm`: k-means++, k-means, EM, pruning), normalize with its
responsibilities (Eq. 34-36) and push the components' statistics onto the queue.
Test mode: Eq. 38-39 over the queue (:mod:`mixnorm_chainer.queue`).
"""
import json
import warnings

import chainer
import numpy
from chainer import initializers

from mixnorm_chainer.functions import (
    MixtureNormalizationFunction,
    check_input,
    check_options,
    compute_dtype,
    to_rows,
)
from mixnorm_chainer.gmm import LOCAL, fit_gmm, rows_problem
from mixnorm_chainer.queue import INFERENCE_FORMS, push, queue_normalization


def split_em_iters(em_iters, kmeans_iters=None):
    """The paper's "EM iter." -> (k-means iterations, EM iterations), "the same number of
    iterations at two phases" (Section 4.2); an odd count gives the extra one to EM.
    ``kmeans_iters`` (0..em_iters) overrides the split: the rest are EM iterations."""
    if int(em_iters) != em_iters or em_iters < 0:
        raise ValueError(f'em_iters must be an integer >= 0; got {em_iters!r}')
    if kmeans_iters is None:
        return int(em_iters) // 2, int(em_iters) - int(em_iters) // 2
    if int(kmeans_iters) != kmeans_iters or not 0 <= kmeans_iters <= em_iters:
        raise ValueError(f'kmeans_iters must be an integer in [0, em_iters={em_iters}] (the '
                         f'rest of "EM iter." are EM iterations); got {kmeans_iters!r}')
    return int(kmeans_iters), int(em_iters) - int(kmeans_iters)


#: ``initial_gamma`` values that depend on K (the DenseNet settings: docs/training-speed.md)
GAMMA_RULES = {'1/sqrt(K)': lambda K: 1.0 / K ** 0.5}


def resolve_initial_gamma(initial_gamma, n_components):
    """``initial_gamma`` for :func:`add_scale_shift`: a rule of :data:`GAMMA_RULES` becomes its
    value for ``n_components``; anything else is passed on as it is."""
    if isinstance(initial_gamma, str):
        if initial_gamma not in GAMMA_RULES:
            raise ValueError('initial_gamma must be a number, an initializer or one of {}; got '
                             '{!r}'.format(', '.join(map(repr, GAMMA_RULES)), initial_gamma))
        return GAMMA_RULES[initial_gamma](n_components)
    return initial_gamma


def add_scale_shift(link, dtype, use_gamma=True, use_beta=True, initial_gamma=None,
                    initial_beta=None):
    """Register per-channel ``gamma`` (default 1) and ``beta`` (default 0) of shape
    ``(link.size,)`` on a normalization link, as ``L.BatchNormalization`` does."""
    with link.init_scope():
        for name, use, initial, default in (('gamma', use_gamma, initial_gamma, 1),
                                            ('beta', use_beta, initial_beta, 0)):
            if use:
                init = initializers._get_initializer(default if initial is None else initial)
                init.dtype = dtype
                setattr(link, name, chainer.Parameter(init, (link.size,)))


def scale_shift(link):
    """The link's ``(gamma, beta)``: its parameters, or constant 1 / 0 arrays where it was
    built with ``use_gamma=False`` / ``use_beta=False``."""
    xp = link.xp
    gamma = link.gamma if hasattr(link, 'gamma') else xp.ones(link.size, link._dtype)
    beta = link.beta if hasattr(link, 'beta') else xp.zeros(link.size, link._dtype)
    return gamma, beta


class MixtureNormalization(chainer.Link):
    """Mixture Normalization layer (Kalayeh & Shah, Section 3.2).

    Args:
        size: number of channels C (axis 1 of the input).
        n_components: K, components of the GMM before pruning.
        em_iters: the paper's "EM iter.": k-means plus EM iterations, split equally
            (2 -> 1 k-means + 1 EM; PAPER-NOTES 2).
        kmeans_iters: None (the equal split), or how many of ``em_iters`` are k-means
            iterations (0: all EM; ``em_iters``: k-means only, the responsibilities of the
            k-means fit's Gaussians).
        eps: added to component variances (Eq. 35).
        queue_length: T, the number of past mixtures kept for inference (Eq. 38).
        queue_decay: zeta of Eq. 39.
        min_weight: components with lambda_k below this are pruned (Section 5.3).
        sample_fraction: fraction of the rows the GMM is fitted on (Section 5.1).
        dtype: dtype of gamma and beta (default ``chainer.config.dtype``; float32 under
            ``chainer.mixed16``, as ``L.BatchNormalization``). The queue is float64.
        use_gamma, use_beta, initial_gamma, initial_beta: as in ``L.BatchNormalization``;
            ``initial_gamma='1/sqrt(K)'`` starts gamma at 1/sqrt(n_components): Eq. 34's
            output has a second moment of about K at initialization (a row owned by one
            component is divided by sqrt(lambda_k)); this scales it back to about 1 (the
            DenseNet settings use it: docs/training-speed.md).
        activation: None, or ``'relu'`` for Eq. 40 (ReLU per component, fused into the layer).
        affine: ``'output'`` (gamma * xhat + beta after Eq. 34, default) or ``'statistics'``
            (Eq. 37 as printed).
        inference: ``'consistent'`` (default) or ``'printed'`` form of Eq. 38
            (see :mod:`mixnorm_chainer.queue`).
        reg_covar: the GMM's variance floor.
        seed: seed of the layer's random generator (k-means++ and subsampling draws).
        pool_rows: 0 (default), or how many rows of each training batch to keep for the
            paper's first inference strategy (a pool of the last T batches' rows, one mixture
            fitted to it: :func:`mixnorm_chainer.reproduce.inference.pool_fit`). The rows are chosen
            without random draws (:func:`pool_indices`), so training is unchanged by the pool.
            ``pool`` (T, pool_rows, C) float32 holds them, oldest entry first as the queue,
            ``pool_sizes`` (T,) the rows of each entry (fewer when a batch has fewer than
            ``pool_rows`` rows) and ``pool_count`` the entries filled; memory:
            ``queue_length * pool_rows * size * 4`` bytes (:func:`pool_memory_bytes`).

    After a training step, ``last_fit`` is the fitted :class:`~mixnorm_chainer.GaussianMixture`
    (weights/means/variances of the GMM), ``last_statistics`` the (lambda, mu, sigma^2) the
    transform used and pushed onto the queue, and ``n_effective_components`` the number of
    components left after pruning (Section 5.3, Figure 9).

    The queue, all options and the state of the layer's random generator are saved and restored
    by ``chainer.serializers``; a checkpoint loads only into a link of the same ``size``,
    ``n_components`` and ``queue_length``.
    """

    _option_names = ('size', 'n_components', 'em_iters', 'kmeans_iters', 'eps', 'queue_length',
                     'queue_decay', 'min_weight', 'sample_fraction', 'activation', 'affine',
                     'inference', 'reg_covar', 'pool_rows')
    _shape_options = ('size', 'n_components', 'queue_length')
    #: the queue: the Eq. 35-36 statistics and the fitted mixtures of the last T steps
    _statistics_queue = ('queue_weights', 'queue_means', 'queue_variances')
    _fit_queue = ('queue_fit_weights', 'queue_fit_means', 'queue_fit_variances')
    _queue_names = _statistics_queue + _fit_queue
    #: the row pool (``pool_rows`` > 0): rows of the last T training batches
    _pool_names = ('pool', 'pool_sizes', 'pool_count')

    def __init__(self, size, n_components=3, em_iters=2, eps=2e-5, queue_length=10,
                 queue_decay=0.9, min_weight=0.01, sample_fraction=1.0, dtype=None,
                 use_gamma=True, use_beta=True, initial_gamma=None, initial_beta=None,
                 activation=None, affine='output', inference='consistent', reg_covar=1e-6,
                 seed=None, kmeans_iters=None, pool_rows=0):
        super().__init__()
        if int(size) != size or size < 1:
            raise ValueError(f'size must be a positive integer; got {size!r}')
        if int(n_components) != n_components or n_components < 1:
            raise ValueError(f'n_components must be an integer >= 1; got {n_components!r}')
        if int(queue_length) != queue_length or queue_length < 1:
            raise ValueError(f'queue_length must be an integer >= 1; got {queue_length!r}')
        self.size = int(size)
        self.n_components = int(n_components)
        self.queue_length = int(queue_length)
        self._set_options(dict(em_iters=em_iters, kmeans_iters=kmeans_iters, eps=eps,
                               queue_decay=queue_decay, min_weight=min_weight,
                               sample_fraction=sample_fraction, activation=activation,
                               affine=affine, inference=inference, reg_covar=reg_covar,
                               pool_rows=pool_rows))
        self._rng = numpy.random.default_rng(seed)
        # Under chainer.mixed16 parameters and statistics stay float32, as in L.BatchNormalization
        dtype = chainer.get_dtype(dtype, map_mixed16=numpy.float32)
        self._dtype = dtype

        # The queue is float64 whatever the layer's dtype: a float32 mean far from the origin
        # is off by half a float32 unit of its magnitude, which test mode would inherit.
        shape_t = (self.queue_length, self.n_components)
        for prefix in ('queue_', 'queue_fit_'):
            setattr(self, prefix + 'weights', numpy.zeros(shape_t, numpy.float64))
            setattr(self, prefix + 'means', numpy.zeros(shape_t + (self.size,), numpy.float64))
            setattr(self, prefix + 'variances', numpy.ones(shape_t + (self.size,), numpy.float64))
        self.queue_count = 0
        for name in self._queue_names + ('queue_count',):
            self.register_persistent(name)
        for name in self._pool_names:
            self.register_persistent(name)

        add_scale_shift(self, dtype, use_gamma, use_beta,
                        resolve_initial_gamma(initial_gamma, self.n_components), initial_beta)
        self.last_fit = None
        self.last_statistics = None

    # -- options -------------------------------------------------------------------------
    def _set_options(self, options):
        em, kmeans = options['em_iters'], options.get('kmeans_iters')   # 0.1: no kmeans_iters
        self.kmeans_iters, self.gmm_em_iters = split_em_iters(em, kmeans)
        self.em_iters = int(em)
        self._kmeans_option = None if kmeans is None else int(kmeans)
        check_options(options['eps'], options['affine'], options['activation'])
        if options['inference'] not in INFERENCE_FORMS:
            raise ValueError('inference must be one of {}; got {!r}'.format(
                INFERENCE_FORMS, options['inference']))
        if not 0 < options['queue_decay'] <= 1:
            raise ValueError('queue_decay must be in (0, 1]; got {!r}'.format(
                options['queue_decay']))
        if not 0 <= options['min_weight'] < 1:
            raise ValueError('min_weight must be in [0, 1); got {!r}'.format(
                options['min_weight']))
        if not 0 < options['sample_fraction'] <= 1:
            raise ValueError('sample_fraction must be in (0, 1]; got {!r}'.format(
                options['sample_fraction']))
        if not options['reg_covar'] > 0:
            raise ValueError('reg_covar must be > 0; got {!r}'.format(options['reg_covar']))
        for name in ('eps', 'queue_decay', 'min_weight', 'sample_fraction', 'reg_covar'):
            setattr(self, name, float(options[name]))
        self.activation = options['activation']
        self.affine = options['affine']
        self.inference = options['inference']
        # a snapshot without pool_rows (before the pool) keeps the link's own (empty) pool
        self._resize_pool(options.get('pool_rows', getattr(self, 'pool_rows', 0)))

    def _resize_pool(self, pool_rows):
        """Set ``pool_rows``; (re)allocate an empty pool when its shape changes."""
        if int(pool_rows) != pool_rows or pool_rows < 0:
            raise ValueError(f'pool_rows must be an integer >= 0 (rows of each training batch '
                             f'kept for the pool strategy; 0: no pool); got {pool_rows!r}')
        self.pool_rows = int(pool_rows)
        shape = (self.queue_length, self.pool_rows, self.size)
        if getattr(self, 'pool', None) is None or self.pool.shape != shape:
            self.pool = self.xp.zeros(shape, numpy.float32)
            self.pool_sizes = self.xp.zeros(self.queue_length, numpy.int64)
            self.pool_count = 0

    def options(self):
        """The layer's options as a dict (what ``serialize`` saves)."""
        options = {name: getattr(self, name) for name in self._option_names}
        options['kmeans_iters'] = self._kmeans_option
        return options

    def serialize(self, serializer):
        options = _serialize_json(serializer, 'mn_options', self.options())
        if options is not None:
            for name in self._shape_options:
                if options[name] != getattr(self, name):
                    raise ValueError(
                        f'cannot load a MixtureNormalization saved with {name}={options[name]} '
                        f'into one with {name}={getattr(self, name)}; build the link with the '
                        f'saved options: {options}')
            self._set_options(options)
        # The k-means++/subsampling generator, so a resumed run draws what it would have drawn.
        rng_state = _serialize_json(serializer, 'mn_rng_state', self._rng.bit_generator.state)
        if rng_state is not None:
            self._rng.bit_generator.state = rng_state
        if not isinstance(serializer, chainer.Deserializer):
            super().serialize(serializer)
            return
        # a snapshot without a pool (older, or pool_rows=0 when saved) leaves the pool empty
        self.pool_count = 0
        self.pool_sizes[...] = 0
        super().serialize(_SkipMissing(serializer, self._fit_queue + self._pool_names))
        self.queue_count = int(self.queue_count)
        self.pool_count = int(self.pool_count)
        if self.queue_count and not bool((self.queue_fit_weights[-1] > 0).any()):
            # a snapshot of version 0.1 has no fitted mixtures in its queue: until training
            # refills it, test mode takes the posteriors from the statistics (+ the fit's floor)
            warnings.warn('MixtureNormalization: the loaded queue has no fitted mixtures (a '
                          'snapshot of mixnorm-chainer 0.1); test-mode posteriors use its '
                          'statistics until training refills the queue', stacklevel=2)
            self.queue_fit_weights[...] = self.queue_weights
            self.queue_fit_means[...] = self.queue_means
            self.queue_fit_variances[...] = self.queue_variances + self.reg_covar

    # -- introspection -------------------------------------------------------------------
    @property
    def n_effective_components(self):
        """Components the last training fit kept after pruning (None before training)."""
        return None if self.last_fit is None else self.last_fit.n_components

    # -- forward -------------------------------------------------------------------------
    def forward(self, x):
        """Normalize x of shape (N, C) or (N, C, H, W) (any (N, C, ...))."""
        xa = x.array if isinstance(x, chainer.Variable) else x
        check_input(xa, self.size)
        gamma, beta = scale_shift(self)
        if chainer.config.train:
            return self._forward_train(x, xa, gamma, beta)
        if self.queue_count == 0:
            raise ValueError(
                'MixtureNormalization is in test mode (chainer.config.train is False) but its '
                'queue is empty: run at least one training-mode forward pass (or load a '
                'trained model) before inference')
        return queue_normalization(
            x, gamma, beta, self.queue_weights, self.queue_means, self.queue_variances,
            self.queue_count, self.queue_decay, self.eps, self.inference, self.affine,
            self.activation,
            fit=(self.queue_fit_weights, self.queue_fit_means, self.queue_fit_variances))

    def _forward_train(self, x, xa, gamma, beta, rows=None, reduction=LOCAL):
        """Fit the batch's GMM, normalize (Eq. 34-36), push onto the queue. ``reduction``:
        where the batch's rows are (:class:`~mixnorm_chainer.multi_node.AllReduce` for the
        synchronized multi-node layer, which also passes its already checked ``rows``)."""
        if rows is None:
            rows = to_rows(xa).astype(compute_dtype(xa.dtype), copy=False)
            problem = rows_problem(rows, self.reg_covar)
            if problem is not None:
                raise ValueError(training_input_error(problem, xa.shape))
        gmm = fit_gmm(rows, self.n_components, kmeans_iters=self.kmeans_iters,
                      em_iters=self.gmm_em_iters, seed=self._rng,
                      sample_fraction=self.sample_fraction, min_weight=self.min_weight,
                      reg_covar=self.reg_covar, check_finite=False, reduction=reduction)
        nu = gmm.responsibilities(rows)
        node = MixtureNormalizationFunction(
            nu, self.eps, self.affine, self.activation, rows=rows,
            shift=None if reduction is LOCAL else gmm.center, reduction=reduction)
        y, = node.apply((x, gamma, beta))
        self.last_fit = gmm
        self.last_statistics = node.statistics
        for queue, mixture in (
                ((self.queue_weights, self.queue_means, self.queue_variances),
                 (node.statistics.weights, _uncentred(node.centred_means, node.center),
                  node.statistics.variances)),
                ((self.queue_fit_weights, self.queue_fit_means, self.queue_fit_variances),
                 (gmm.weights, _uncentred(gmm.centred_means, gmm.center), gmm.variances))):
            push(queue, [a.astype(numpy.float64, copy=False) for a in mixture])
        self.queue_count = min(self.queue_count + 1, self.queue_length)
        if self.pool_rows:
            self._keep_pool_rows(rows)
        return y

    def _keep_pool_rows(self, rows):
        """Push the batch's :func:`pool_indices` rows onto the pool (no random draws)."""
        xp = self.xp
        ids = pool_indices(rows.shape[0], self.pool_rows)
        self.pool[:-1] = self.pool[1:].copy()
        self.pool[-1] = 0
        self.pool[-1, :ids.size] = rows[xp.asarray(ids)].astype(numpy.float32, copy=False)
        self.pool_sizes[:-1] = self.pool_sizes[1:].copy()
        self.pool_sizes[-1] = ids.size
        self.pool_count = min(self.pool_count + 1, self.queue_length)


#: frac(i * golden ratio): the offsets of :func:`pool_indices` in their strata
_GOLDEN = (5 ** 0.5 - 1) / 2


def pool_indices(m, pool_rows):
    """The rows of an m-row batch the pool keeps: ``n = min(pool_rows, m)`` sorted indices, the
    i-th in the i-th of n strata of consecutive rows ``[i m // n, (i + 1) m // n)``, at the
    offset ``floor(frac(i g) * stratum length)`` (g the golden ratio). Evenly strided like
    ``i m // n``, but a stride that is a multiple of a feature map's H*W does not pick the
    same pixel of every image. Deterministic: no random draws."""
    n = min(int(pool_rows), int(m))
    i = numpy.arange(n, dtype=numpy.int64)
    low = i * m // n
    length = (i + 1) * m // n - low
    return low + numpy.floor(i * _GOLDEN % 1.0 * length).astype(numpy.int64)


def pool_memory_bytes(queue_length, pool_rows, size):
    """Memory of a link's row pool: ``queue_length * pool_rows * size * 4`` bytes (float32)."""
    return int(queue_length) * int(pool_rows) * int(size) * 4


def _uncentred(centred_means, center):
    """``centred_means + center`` in float64 (exact for float32 parts)."""
    if center is None:
        return centred_means
    return centred_means.astype(numpy.float64) + center.astype(numpy.float64)


def training_input_error(problem, shape):
    """The ValueError message for training-mode input the mixture cannot be fitted to."""
    return (f'MixtureNormalization (training mode, input shape {tuple(shape)}): {problem}; the '
            'mixture cannot be fitted and the layer state is unchanged')


class _SkipMissing:
    """A deserializer that leaves the ``optional`` keys unchanged when the file lacks them."""

    def __init__(self, deserializer, optional):
        self.deserializer = deserializer
        self.optional = optional

    def __call__(self, key, value):
        try:
            return self.deserializer(key, value)
        except KeyError:
            if key not in self.optional:
                raise
            return value


def _serialize_json(serializer, key, value):
    """Save ``value`` as UTF-8 JSON bytes (a uint8 array: npz and HDF5 both store it); when
    loading, return the saved value (also from the str of snapshots before 0.2), or None."""
    if not isinstance(serializer, chainer.Deserializer):
        serializer(key, numpy.frombuffer(json.dumps(value, sort_keys=True).encode(), numpy.uint8))
        return None
    saved = serializer(key, None)
    if saved is None:
        return None
    saved = numpy.asarray(saved)
    if saved.dtype == numpy.uint8:
        text = saved.tobytes().decode()
    elif saved.dtype.kind == 'S':
        text = saved.item().decode()
    else:
        text = str(saved.item() if saved.ndim == 0 else saved)
    return json.loads(text)

