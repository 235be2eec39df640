"""Named attack-strength grids, usable in a study as ``grid: {eps: huang2021}``.

- ``huang2021``: the 13 L-inf budgets of huang2021's Tables 1-3 and 5-7, ``PGD(n = 40, eps)``
  with ``eps`` in ``{0} U {1, 3, 5} x 10^-m, m = 1..4`` (pixel scale ``[0, 1]``; 0 is the
  clean image).
- ``huang2021-steps``: the iteration sweep of huang2021's Table 5 text, ``n`` in
  ``{10, 30, 50, 70, 90}`` at a fixed ``eps = 0.3``.

Example:
    >>> named_grid("huang2021-steps")
    [10, 30, 50, 70, 90]
    >>> len(named_grid("huang2021")), named_grid("huang2021")[-1]
    (13, 0.5)
"""

from __future__ import annotations

from robustlab.errors import UnknownNameError

GRIDS: dict[str, tuple[float, ...]] = {
    "huang2021": (0.0, 1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2, 1e-1, 3e-1, 5e-1),
    "huang2021-steps": (10, 30, 50, 70, 90),
}


def named_grid(name: str) -> list[float]:
    """The values of the named grid ``name`` (a new list).

    Raises:
        UnknownNameError: listing the known grids.
    """
    if name not in GRIDS:
        raise UnknownNameError("attack grid", name, GRIDS)
    return list(GRIDS[name])
