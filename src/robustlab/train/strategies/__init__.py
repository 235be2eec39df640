"""The built-in training strategies, one module each (scanned by ``load_builtin_strategies``).

Example:
    >>> from robustlab.train.strategy import STRATEGIES, load_builtin_strategies
    >>> load_builtin_strategies()
    >>> "standard" in STRATEGIES
    True
"""
