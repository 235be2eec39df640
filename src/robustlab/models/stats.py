"""Per-channel pixel statistics of the standard datasets, the default input normalisations.

Values are mean and standard deviation of the training images on the ``[0, 1]`` scale, over
all pixels of a channel. MNIST and Fashion-MNIST are checked against the real files by the
tests; CIFAR-10, SVHN and GTSRB are the values commonly used with those datasets (CIFAR-10's
standard deviation is the per-pixel one, 0.247 / 0.243 / 0.261, not the 0.2023 / 0.1994 /
0.2010 of some reference code, which is the std of per-image means).

Example:
    >>> CIFAR10_MEAN
    (0.4914, 0.4822, 0.4465)
    >>> len(MNIST_STD)
    1
"""

from __future__ import annotations

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
GTSRB_MEAN = (0.3403, 0.3121, 0.3214)
GTSRB_STD = (0.2724, 0.2608, 0.2669)
