"""Weights to and from a PyTorch-style state dict (``.npz`` with torch names and layouts).

:func:`export_state_dict` walks a Chainer model (e.g. :class:`~mixnorm_chainer.models.CifarCNN`)
and names every array as ``torch.nn.Module.state_dict()`` would for the matching torch layers;
:func:`import_state_dict` loads such a dict back (strict: every key, shape and dtype kind must
match). :func:`save_npz` / :func:`load_npz` store it as an ``.npz`` plus one extra key,
``__metadata__`` (a JSON string: the model class, the MN layers' options and random-generator
states, the BN layers' eps/decay), which a torch user skips::

    sd = {k: torch.from_numpy(v) for k, v in numpy.load(path).items() if k != '__metadata__'}

Name mapping (link path ``/a/b`` becomes the module path ``a.b``; layouts are identical):

=========================  ==================  ====================================  ============
Chainer link / array       torch name          shape                                 torch layer
=========================  ==================  ====================================  ============
Convolution2D ``W``        ``weight``          (out, in, kh, kw)                     Conv2d
Convolution2D ``b``        ``bias``            (out,)  (absent with nobias=True)     Conv2d
Linear ``W``               ``weight``          (out, in)                             Linear
Linear ``b``               ``bias``            (out,)                                Linear
BatchNormalization gamma   ``weight``          (C,)                                  BatchNorm2d
BatchNormalization beta    ``bias``            (C,)                                  BatchNorm2d
BN ``avg_mean``            ``running_mean``    (C,)                                  BatchNorm2d
BN ``avg_var``             ``running_var``     (C,) (unbiased, as torch's)           BatchNorm2d
BN ``N`` (see below)       ``num_batches_tracked``  () int64                         BatchNorm2d
MixtureNormalization gamma ``weight``          (C,)                                  (MN module)
MixtureNormalization beta  ``bias``            (C,)                                  (MN module)
MN ``queue_weights``       ``queue_weights``   (T, K) lambda, oldest entry first     buffer
MN ``queue_means``         ``queue_means``     (T, K, C) mu                          buffer
MN ``queue_variances``     ``queue_variances`` (T, K, C) sigma^2 (without eps)       buffer
MN ``queue_fit_weights``   same name           (T, K) the fitted GMMs' weights        buffer
MN ``queue_fit_means``     same name           (T, K, C) their means                 buffer
MN ``queue_fit_variances`` same name           (T, K, C) their variances (floored)   buffer
MN ``queue_count``         ``queue_count``     () int64, entries filled (newest last) buffer
MGN gamma                  ``weight``          (C,)                                  GroupNorm
MGN beta                   ``bias``            (C,)                                  GroupNorm
=========================  ==================  ====================================  ============

MGN: :class:`~mixnorm_chainer.MixtureGroupNormalization` (no buffers: it has no queue; torch's
``GroupNorm`` names its per-channel parameters the same way). The MN queue arrays are float64
whatever the model's dtype (as the link keeps them).

Chainer's BN defaults differ from torch's: build ``BatchNorm2d(C, eps=2e-5, momentum=0.1)``
(Chainer's ``decay=0.9``); the metadata records each BN layer's eps and decay. Chainer's
``N`` counts only ``finetune=True`` passes (0 after ordinary training), while torch counts every
training batch; torch reads ``num_batches_tracked`` only when ``momentum=None``, so the value is
carried over as is and matters to neither side's outputs.
"""
import json

import chainer
import chainer.links as L
import numpy

from mixnorm_chainer.group_normalization import MixtureGroupNormalization
from mixnorm_chainer.links import MixtureNormalization
from mixnorm_chainer.queue import ParameterQueue

FORMAT = 'mixnorm-chainer torch-style state dict'
FORMAT_VERSION = 2
METADATA_KEY = '__metadata__'

_PARAMS = {
    L.Convolution2D: {'W': 'weight', 'b': 'bias'},
    L.Linear: {'W': 'weight', 'b': 'bias'},
    L.BatchNormalization: {'gamma': 'weight', 'beta': 'bias'},
    MixtureNormalization: {'gamma': 'weight', 'beta': 'bias'},
    MixtureGroupNormalization: {'gamma': 'weight', 'beta': 'bias'},
}
_PERSISTENTS = {
    L.BatchNormalization: {'avg_mean': 'running_mean', 'avg_var': 'running_var',
                           'N': 'num_batches_tracked'},
    MixtureNormalization: {'queue_' + name: 'queue_' + name
                           for name in ParameterQueue.ARRAYS + ('count',)},
}
_INTEGER_PERSISTENTS = ('N', 'queue_count')


def _holder(link, cname):
    """``(object, attribute)`` of a link's persistent ``cname`` (an MN layer keeps its
    ``queue_*`` in its :class:`~mixnorm_chainer.queue.ParameterQueue`)."""
    if isinstance(link, MixtureNormalization) and cname.startswith('queue_'):
        return link.queue, cname[len('queue_'):]
    return link, cname


def _leaf_links(model):
    """``(torch module path, link, kind)`` for every link holding parameters or persistents."""
    for path, link in sorted(model.namedlinks(), key=lambda item: item[0]):
        own = set(link._params) | set(link._persistent) | set(_PERSISTENTS.get(type(link), ()))
        if not own:
            continue
        kind = next((k for k in _PARAMS if type(link) is k), None)
        if kind is None:
            raise ValueError(f'export to a torch state dict does not support {type(link).__name__}'
                             f' at {path or "/"} (supported: Convolution2D, Linear, '
                             'BatchNormalization, MixtureNormalization, '
                             'MixtureGroupNormalization)')
        yield path.strip('/').replace('/', '.'), link, kind


def _key(prefix, name):
    return f'{prefix}.{name}' if prefix else name


def export_state_dict(model):
    """``(state_dict, metadata)``: ``{torch name: numpy array}`` and a JSON-able dict."""
    state = {}
    meta = {'format': FORMAT, 'format_version': FORMAT_VERSION, 'model': type(model).__name__,
            'mn_layers': list(getattr(model, 'mn_layers', ())), 'mn_options': {},
            'mn_rng_state': {}, 'bn_options': {}}
    for prefix, link, kind in _leaf_links(model):
        for cname, tname in _PARAMS[kind].items():
            param = getattr(link, cname, None)
            if param is None:
                continue
            if param.array is None:
                raise ValueError(f'{prefix}.{cname} is not initialized yet (run one forward '
                                 'pass first)')
            state[_key(prefix, tname)] = numpy.array(chainer.backends.cuda.to_cpu(param.array))
        for cname, tname in _PERSISTENTS.get(kind, {}).items():
            value = getattr(*_holder(link, cname))
            if cname in _INTEGER_PERSISTENTS:
                state[_key(prefix, tname)] = numpy.array(int(value), dtype=numpy.int64)
            else:
                state[_key(prefix, tname)] = numpy.array(chainer.backends.cuda.to_cpu(value))
        if kind is MixtureNormalization:
            meta['mn_options'][prefix] = link.options()
            meta['mn_rng_state'][prefix] = link._rng.bit_generator.state
        elif kind is L.BatchNormalization:
            meta['bn_options'][prefix] = {'eps': float(link.eps), 'decay': float(link.decay)}
    return state, meta


def expected_keys(model):
    """``{torch name: (shape, dtype)}`` that :func:`import_state_dict` requires for ``model``."""
    state, _ = export_state_dict(model)
    return {k: (v.shape, v.dtype) for k, v in state.items()}


def import_state_dict(model, state, metadata=None):
    """Load ``{torch name: array}`` into ``model`` in place (strict).

    Every key the model needs must be present with the same shape and dtype kind (float vs
    integer), and no other key may be; values are cast to the model's dtypes. With
    ``metadata`` (as written by :func:`save_npz`), MN layers also get their saved options and
    random-generator states back (their shape options must match).
    """
    state = {k: v for k, v in state.items() if k != METADATA_KEY}
    links = list(_leaf_links(model))
    wanted = {}
    for prefix, link, kind in links:
        for cname, tname in _PARAMS[kind].items():
            if getattr(link, cname, None) is not None:
                wanted[_key(prefix, tname)] = (link, cname, True)
        for cname, tname in _PERSISTENTS.get(kind, {}).items():
            wanted[_key(prefix, tname)] = (link, cname, False)
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise ValueError(f'state dict does not fit {type(model).__name__}: missing keys '
                         f'{missing}, unexpected keys {unexpected}')
    problems = []
    for key, (link, cname, is_param) in wanted.items():
        value = numpy.asarray(state[key])
        if cname in _INTEGER_PERSISTENTS:
            if value.shape != () or value.dtype.kind not in 'iu':
                problems.append(f'{key}: expected an integer scalar, got {value.dtype} '
                                f'{value.shape}')
            continue
        current = getattr(*_holder(link, cname))
        target = current.array if is_param else current
        if target is None:
            problems.append(f'{key}: the model parameter is not initialized')
        elif value.shape != target.shape or value.dtype.kind != 'f':
            problems.append(f'{key}: expected float {target.shape}, got {value.dtype} '
                            f'{value.shape}')
    if problems:
        raise ValueError('state dict does not fit: ' + '; '.join(problems))

    for key, (link, cname, is_param) in wanted.items():
        value = numpy.asarray(state[key])
        if cname in _INTEGER_PERSISTENTS:
            setattr(*_holder(link, cname), int(value))
            continue
        current = getattr(*_holder(link, cname))
        target = current.array if is_param else current
        xp = chainer.backend.get_array_module(target)
        target[...] = xp.asarray(value.astype(target.dtype, copy=False))
    if metadata:
        for prefix, link, kind in links:
            if kind is not MixtureNormalization:
                continue
            options = metadata.get('mn_options', {}).get(prefix)
            if options is not None:
                for name in MixtureNormalization._shape_options:
                    if options[name] != getattr(link, name):
                        raise ValueError(f'{prefix}: saved with {name}={options[name]}, the '
                                         f'model has {name}={getattr(link, name)}')
                link._set_options(options)
            rng_state = metadata.get('mn_rng_state', {}).get(prefix)
            if rng_state is not None:
                link._rng.bit_generator.state = rng_state
    return model


def save_npz(model, path):
    """Write the model's torch-style state dict (+ ``__metadata__``) to ``path`` (.npz)."""
    state, meta = export_state_dict(model)
    if METADATA_KEY in state:
        raise ValueError(f'a parameter is named {METADATA_KEY!r}')
    numpy.savez(path, **state, **{METADATA_KEY: numpy.array(json.dumps(meta))})
    return state, meta


def read_npz(path):
    """``(state_dict, metadata)`` from a file written by :func:`save_npz`."""
    with numpy.load(path, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files if k != METADATA_KEY}
        meta = json.loads(str(z[METADATA_KEY])) if METADATA_KEY in z.files else None
    if meta is not None and meta.get('format') != FORMAT:
        raise ValueError(f'{path}: not a {FORMAT} file (format {meta.get("format")!r})')
    return state, meta


def load_npz(model, path):
    """Load a file written by :func:`save_npz` into ``model`` (in place); returns the model."""
    state, meta = read_npz(path)
    return import_state_dict(model, state, meta)
