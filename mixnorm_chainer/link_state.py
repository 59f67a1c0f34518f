"""What the normalization links share (MN, its multi-node form, GBN): per-channel gamma and beta
as ``L.BatchNormalization`` has them, and the state that ``chainer.serializers`` saves besides
arrays (options and generator states as JSON, snapshots that lack newer keys)."""
import json

import chainer
import numpy
from chainer import initializers


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


class SkipMissing(chainer.Deserializer):
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


def serialize_json(serializer, key, value):
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
