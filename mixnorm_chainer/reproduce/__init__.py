"""The apparatus that reproduces the paper around the layer: settings, data, training runs,
reports over seeds, inference strategies, figures, DCGAN/FID, the cross-check, the doctor.

Nothing in the layer (:mod:`mixnorm_chainer` above this package) imports from here.
"""
