"""``MixtureNormalization``: the Link over the MN function (parameters, queue, train/test switch).

Training mode (``chainer.config.train``): fit the layer's GMM to the batch rows outside the
graph (:func:`mixnorm_chainer.fit_gmm`: k-means++, k-means, EM, pruning), normalize with its
responsibilities (Eq. 34-36) and push both mixtures onto the queue.
Test mode: Eq. 38-39 over the queue (:mod:`mixnorm_chainer.queue`).
"""
import copy
import warnings

import chainer
import numpy

from mixnorm_chainer import options
from mixnorm_chainer.functions import (
    MixtureNormalizationFunction,
    check_input,
    compute_dtype,
    to_rows,
)
from mixnorm_chainer.gmm import fit_gmm, random_generator, rows_problem, uncentred
from mixnorm_chainer.link_state import SkipMissing, add_scale_shift, scale_shift, serialize_json
from mixnorm_chainer.pool import RowPool
from mixnorm_chainer.queue import ParameterQueue, queue_normalization
from mixnorm_chainer.reduction import LOCAL
from mixnorm_chainer.warm_start import WarmStart


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
        seed: seed of the layer's random generator (k-means++ and subsampling draws); None
            (default) seeds it with one draw from numpy's global random state when the layer
            is built, so ``numpy.random.seed(s)`` before building a model makes its runs repeat.
        pool_rows: 0 (default), or how many rows of each training batch to keep for the
            paper's first inference strategy (``pool``, a :class:`~mixnorm_chainer.pool.RowPool`
            of the last T batches' rows, chosen without random draws, so training is unchanged
            by it; memory ``queue_length * pool_rows * size * 4`` bytes).
        init: where each training step's fit starts: ``'kmeans++'`` (default, the paper's
            seeding), ``'afkmc2'`` (the AFK-MC² seeding Section 5.1 names,
            :func:`~mixnorm_chainer.seeding.afkmc2`), or ``'previous'``: EM starts from the
            previous step's fitted mixture (``em_iters`` EM iterations, no seeding or
            k-means), reseeding with k-means++ where :mod:`mixnorm_chainer.warm_start`'s rule
            says (``warm_start.state`` counts the decisions).
        chain_length: AFK-MC²'s chain length (None: Section 5.1's ``K ln^2(m) ln K``).
        reseed_every, reseed_drop: the warm start's reseeding rule: every that many steps (0:
            never for that reason), and when the batch's mean log-likelihood per channel under
            the previous mixture drops this many nats below its running average.

    ``queue`` is the :class:`~mixnorm_chainer.queue.ParameterQueue` of the last T training
    steps' mixtures (Eq. 38). After a training step, ``last_fit`` is the fitted
    :class:`~mixnorm_chainer.GaussianMixture` (weights/means/variances of the GMM),
    ``last_statistics`` the (lambda, mu, sigma^2) the transform used and pushed onto the
    queue, and ``n_effective_components`` the number of
    components left after pruning (Section 5.3, Figure 9).

    The queue, the pool, all options and the state of the layer's random generator are saved
    and restored by ``chainer.serializers``; a checkpoint loads only into a link of the same
    ``size``, ``n_components`` and ``queue_length``.

    Under ``F.forget`` (memory-saving recomputation) the backward pass's second call reuses the
    first call's mixture and leaves the queue, the pool and the generator as the first call
    left them, as ``L.BatchNormalization`` leaves its running statistics
    (``chainer.config.in_recomputing``).
    """

    _option_names = ('size', 'n_components', 'em_iters', 'kmeans_iters', 'eps', 'queue_length',
                     'queue_decay', 'min_weight', 'sample_fraction', 'activation', 'affine',
                     'inference', 'reg_covar', 'pool_rows', 'init', 'chain_length',
                     'reseed_every', 'reseed_drop')
    _shape_options = ('size', 'n_components', 'queue_length')

    def __init__(self, size, n_components=3, em_iters=2, eps=2e-5, queue_length=10,
                 queue_decay=0.9, min_weight=0.01, sample_fraction=1.0, dtype=None,
                 use_gamma=True, use_beta=True, initial_gamma=None, initial_beta=None,
                 activation=None, affine='output', inference='consistent', reg_covar=1e-6,
                 seed=None, kmeans_iters=None, pool_rows=0, init='kmeans++', chain_length=None,
                 reseed_every=0, reseed_drop=0.5):
        super().__init__()
        self.size, self.n_components, self.queue_length = options.check_all(
            size=size, n_components=n_components, queue_length=queue_length).values()
        self.queue = ParameterQueue(self.queue_length, self.n_components, self.size)
        self._set_options(dict(em_iters=em_iters, kmeans_iters=kmeans_iters, eps=eps,
                               queue_decay=queue_decay, min_weight=min_weight,
                               sample_fraction=sample_fraction, activation=activation,
                               affine=affine, inference=inference, reg_covar=reg_covar,
                               pool_rows=pool_rows, init=init, chain_length=chain_length,
                               reseed_every=reseed_every, reseed_drop=reseed_drop))
        self._rng = random_generator(seed)
        # Under chainer.mixed16 parameters and statistics stay float32, as in L.BatchNormalization
        self._dtype = chainer.get_dtype(dtype, map_mixed16=numpy.float32)
        add_scale_shift(self, self._dtype, use_gamma, use_beta,
                        options.initial_gamma_value(initial_gamma, self.n_components),
                        initial_beta)
        self.last_fit = None
        self.last_statistics = None
        self._forgotten = ForgottenFits()

    # -- options and state ---------------------------------------------------------------
    def _set_options(self, opts):
        em, kmeans = opts['em_iters'], opts.get('kmeans_iters')    # 0.1: no kmeans_iters
        self.kmeans_iters, self.gmm_em_iters = options.split_em_iters(em, kmeans)
        self.em_iters = options.check('em_iters', em)
        self._kmeans_option = None if kmeans is None else int(kmeans)
        self.__dict__.update(options.check_all(**{name: opts[name] for name in (
            'eps', 'queue_decay', 'min_weight', 'sample_fraction', 'activation', 'affine',
            'inference', 'reg_covar')}))
        # older snapshots have no init options: the paper's seeding
        self.init = options.check('init', opts.get('init', 'kmeans++'))
        chain = opts.get('chain_length')
        self.chain_length = None if chain is None else options.check('chain_length', chain)
        self.reseed_every = options.check('reseed_every', opts.get('reseed_every', 0))
        self.reseed_drop = options.check('reseed_drop', opts.get('reseed_drop', 0.5))
        if not hasattr(self, 'warm_start'):
            self.warm_start = WarmStart()
        self.warm_start.reseed_every, self.warm_start.reseed_drop = \
            self.reseed_every, self.reseed_drop
        self.warm_start.min_weight = self.min_weight
        # a snapshot without pool_rows (before the pool) keeps the link's own (empty) pool
        pool_rows = opts.get('pool_rows', self.pool_rows if hasattr(self, 'pool') else 0)
        if not hasattr(self, 'pool') or options.check('pool_rows', pool_rows) != self.pool_rows:
            self.pool = RowPool(self.queue_length, pool_rows, self.size, self.xp)

    @property
    def pool_rows(self):
        return self.pool.pool_rows

    def options(self):
        """The layer's options as a dict (what ``serialize`` saves)."""
        opts = {name: getattr(self, name) for name in self._option_names}
        opts['kmeans_iters'] = self._kmeans_option
        return opts

    def serialize(self, serializer):
        super().serialize(serializer)
        saved = serialize_json(serializer, 'mn_options', self.options())
        if saved is not None:
            for name in self._shape_options:
                if saved[name] != getattr(self, name):
                    raise ValueError(
                        f'cannot load a MixtureNormalization saved with {name}={saved[name]} '
                        f'into one with {name}={getattr(self, name)}; build the link with the '
                        f'saved options: {saved}')
            self._set_options(saved)
        # The k-means++/subsampling generator, so a resumed run draws what it would have drawn.
        rng_state = serialize_json(serializer, 'mn_rng_state', self._rng.bit_generator.state)
        if rng_state is not None:
            self._rng.bit_generator.state = rng_state
        if isinstance(serializer, chainer.Deserializer):
            # snapshots of 0.1 have no fitted mixtures, older ones and pool_rows=0 no pool,
            # those before the init option no warm-start state
            optional = ['queue_' + name for name in ParameterQueue.ARRAYS if 'fit_' in name]
            serializer = SkipMissing(serializer, optional + list(RowPool.KEYS.values()) +
                                     ['mn_init_state'])
        # the warm start's decisions so far (a resumed run decides as the uninterrupted one)
        init_state = serialize_json(serializer, 'mn_init_state', self.warm_start.state)
        if init_state is not None:
            self.warm_start.state = init_state
        self.queue.serialize(serializer)
        self.pool.serialize(serializer)
        if isinstance(serializer, SkipMissing) and self.queue.count and \
                not bool((self.queue.fit_weights[-1] > 0).any()):
            # a snapshot of version 0.1 has no fitted mixtures in its queue: until training
            # refills it, test mode takes the posteriors from the statistics (+ the fit's floor)
            warnings.warn('MixtureNormalization: the loaded queue has no fitted mixtures (a '
                          'snapshot of mixnorm-chainer 0.1); test-mode posteriors use its '
                          'statistics until training refills the queue', stacklevel=2)
            self.queue.fit_weights[...] = self.queue.weights
            self.queue.fit_means[...] = self.queue.means
            self.queue.fit_variances[...] = self.queue.variances + self.reg_covar

    def device_resident_accept(self, visitor):
        super().device_resident_accept(visitor)
        self.queue.device_resident_accept(visitor)
        self.pool.device_resident_accept(visitor)

    def copyparams(self, link, copy_persistent=True):
        super().copyparams(link, copy_persistent)
        if copy_persistent:
            for mine, other in ((self.queue, link.queue), (self.pool, link.pool)):
                state = {}
                other.serialize(chainer.serializers.DictionarySerializer(state))
                mine.serialize(chainer.serializers.NpzDeserializer(state))
            self.warm_start.state = copy.deepcopy(link.warm_start.state)

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
        if self.queue.count == 0:
            raise ValueError(
                'MixtureNormalization is in test mode (chainer.config.train is False) but its '
                'queue is empty: run at least one training-mode forward pass (or load a '
                'trained model) before inference')
        return queue_normalization(x, gamma, beta, *self.queue.statistics, self.queue.count,
                                   self.queue_decay, self.eps, self.inference, self.affine,
                                   self.activation, fit=self.queue.fit)

    def _forward_train(self, x, xa, gamma, beta, rows=None, reduction=LOCAL):
        """Fit the batch's GMM, normalize (Eq. 34-36), push onto the queue. ``reduction``:
        where the batch's rows are (:class:`~mixnorm_chainer.multi_node.AllReduce` for the
        synchronized multi-node layer, which also passes its already checked ``rows``)."""
        if rows is None:
            rows = to_rows(xa).astype(compute_dtype(xa.dtype), copy=False)
            problem = rows_problem(rows, self.reg_covar)
            if problem is not None:
                raise ValueError(training_input_error(problem, xa.shape))
        recomputing = chainer.config.in_recomputing
        if recomputing:                   # F.forget's backward: the forward pass's mixture
            gmm = self._forgotten.take(rows)
        else:
            gmm = self.fit_mixture(rows, reduction)
        node = MixtureNormalizationFunction(
            gmm.responsibilities(rows), self.eps, self.affine, self.activation, rows=rows,
            shift=gmm.center, reduction=reduction)
        y, = node.apply((x, gamma, beta))
        if recomputing:
            return y
        if getattr(chainer.config, '_will_recompute', False):     # under F.forget
            self._forgotten.keep(rows, gmm)
        self.last_fit, self.last_statistics = gmm, node.statistics
        self.queue.push((node.statistics.weights, uncentred(node.centred_means, node.center),
                         node.statistics.variances), (gmm.weights, gmm.means64, gmm.variances))
        if self.pool_rows:
            self.pool.push(rows)
        return y

    def fit_mixture(self, rows, reduction=LOCAL):
        """The mixture a training step fits to ``rows`` (m, C): seeded as ``init`` says, or
        warm-started from the queue's newest entry (:mod:`mixnorm_chainer.warm_start`).
        Advances the random generator and the warm start's state; the queue is left as it is
        (a training step then pushes the result)."""
        common = dict(seed=self._rng, sample_fraction=self.sample_fraction,
                      min_weight=self.min_weight, reg_covar=self.reg_covar, check_finite=False,
                      reduction=reduction, chain_length=self.chain_length)

        def fit(init, accept=None):
            if isinstance(init, str):
                return fit_gmm(rows, self.n_components, kmeans_iters=self.kmeans_iters,
                               em_iters=self.gmm_em_iters,
                               init='kmeans++' if init == 'seed' else init, **common)
            return fit_gmm(rows, self.n_components, em_iters=self.em_iters, init=init,
                           accept_start=accept, **common)

        if self.init != 'previous':
            return fit(self.init)
        return self.warm_start.fit(fit, self.queue.newest_fit(), rows.shape[1],
                                   self.n_components)


class ForgottenFits:
    """The mixtures of training passes made under ``F.forget``, until its backward pass
    recomputes them.

    ``F.forget`` calls the layer twice: without a graph (``chainer.config._will_recompute``)
    and again in backward (``chainer.config.in_recomputing``) to build the graph. The second
    call must normalize with the first call's mixture (a fit draws random numbers; with
    ``sample_fraction < 1`` a refit is another mixture, and the gradient would belong to it).
    A recomputation takes the kept mixture whose rows have the same shape and sums (the same
    input, recomputed); failing that (an upstream computation that is not bit-reproducible),
    the oldest kept one of that shape. At most :attr:`LIMIT` are kept (forward passes whose
    backward never ran are dropped, oldest first).
    """

    LIMIT = 64

    def __init__(self):
        self.entries = []

    @staticmethod
    def _key(rows):
        xp = chainer.backend.get_array_module(rows)
        sums = xp.stack([rows.sum(dtype=numpy.float64), xp.abs(rows).sum(dtype=numpy.float64)])
        return rows.shape, tuple(float(v) for v in chainer.backends.cuda.to_cpu(sums))

    def keep(self, rows, gmm):
        self.entries.append((self._key(rows), gmm))
        del self.entries[:-self.LIMIT]

    def take(self, rows):
        key = self._key(rows)
        for match in (lambda k: k == key, lambda k: k[0] == key[0]):
            for i, (k, _) in enumerate(self.entries):
                if match(k):
                    return self.entries.pop(i)[1]
        raise ValueError(
            'MixtureNormalization: recomputing (chainer.config.in_recomputing) an input of '
            f'shape {key[0]} that no forward pass under F.forget saw; call the layer inside '
            'F.forget in training mode before its backward pass')


def training_input_error(problem, shape):
    """The ValueError message for training-mode input the mixture cannot be fitted to."""
    return (f'MixtureNormalization (training mode, input shape {tuple(shape)}): {problem}; the '
            'mixture cannot be fitted and the layer state is unchanged')
