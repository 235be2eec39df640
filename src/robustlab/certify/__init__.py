"""Certified robustness: guarantees that hold for every perturbation within a radius.

:mod:`robustlab.certify.smoothing` implements randomised smoothing (Cohen, Rosenfeld & Kolter,
ICML 2019): :func:`certify` gives each image a class and an L2 radius within which the smoothed
classifier provably does not change (with probability ``1 - alpha`` over the sampling), and
:func:`predict` the smoothed classifier's class or an abstention. Both accept any base model,
including Gaussian-noise-trained ones and ``denoiser -> classifier`` pipelines (denoised
smoothing, Salman et al. 2020).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.certify import certify
    >>> from robustlab.seeding import make_generator
    >>> class Constant(nn.Module):
    ...     def forward(self, x):
    ...         return torch.tensor([1.0, 0.0]).expand(len(x), 2)
    >>> cert = certify(Constant(), torch.rand(3, 1, 8, 8), sigma=0.25, n0=10, n=1000,
    ...                generator=make_generator(0))
    >>> cert.prediction.tolist()
    [0, 0, 0]
    >>> cert.certified_accuracy([0, 0, 1], [0.0, 0.5]).tolist()
    [0.6666666666666666, 0.6666666666666666]
"""

from robustlab.certify.smoothing import Certificate, certify, predict

__all__ = ["Certificate", "certify", "predict"]
