"""One network, several heads: ghosh2018's slave with a trunk shared by every branch.

ghosh2018's slave (Section 4.1) is "a common trunk ... followed by 3 branches", each branch
trained "for different compression ranges". :class:`SharedTrunkBranches` holds that structure
for any classifier: the network itself is the trunk plus branch 1's head (its last ``layers``
``nn.Linear`` layers), and every other branch is a copy of that head. Branch ``k`` runs the
whole network with its own head's weights put in place of the first head's
(:func:`torch.func.functional_call`), so the trunk's weights exist once and are shared whether
they are frozen or trained; the ``joint_branches`` strategy trains them.

``forward`` is branch 1 (the clean branch), so the network is also a classifier of its own;
:class:`Branch` is a view of one branch, the form a master-slave router takes its branches in.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> slave = SharedTrunkBranches(net, branches=3, layers=1)
    >>> x = torch.rand(2, 1, 2, 2)
    >>> bool(torch.equal(slave.branch(x, 2), net(x)))  # a fresh copy answers as the original
    True
    >>> with torch.no_grad():
    ...     _ = slave.head_parameters(2)[0].add_(1.0)  # branch 3's output weights
    >>> bool(torch.equal(slave.branch(x, 2), net(x))), bool(torch.equal(slave(x), net(x)))
    (False, True)
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from robustlab.errors import InvalidParameterError


def head_layers(model: nn.Module, layers: int) -> list[tuple[str, nn.Linear]]:
    """The qualified names and modules of ``model``'s last ``layers`` ``nn.Linear`` layers.

    Raises:
        InvalidParameterError: if the model has fewer.
    """
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(found) < layers:
        names = ", ".join(name for name, _ in found) or "none"
        raise InvalidParameterError(
            f"a head of {layers} Linear layer(s) was asked for but {type(model).__name__} has "
            f"{len(found)} ({names}); set layers to at most {len(found)}"
        )
    return found[-layers:]


class SharedTrunkBranches(nn.Module):
    """A network whose last ``layers`` Linear layers exist once per branch (see above).

    Args:
        base: the network (trunk and branch 1's head); kept, not copied.
        branches: how many branches, ``>= 2``.
        layers: how many of the last ``nn.Linear`` layers form a head, ``>= 1``.

    Raises:
        InvalidParameterError: for fewer than two branches, or more head layers than ``base``
            has.
    """

    def __init__(self, base: nn.Module, branches: int, layers: int) -> None:
        super().__init__()
        if branches < 2:
            raise InvalidParameterError(f"a shared trunk needs at least 2 branches, got {branches}")
        if layers < 1:
            raise InvalidParameterError(f"a head needs at least one Linear layer, got {layers}")
        found = head_layers(base, layers)
        self.base = base
        self.head_names = [name for name, _ in found]
        self.heads = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(layer) for _, layer in found) for _ in range(branches - 1)
        )

    @property
    def branches(self) -> int:
        """How many branches (heads) the network has."""
        return len(self.heads) + 1

    def head_modules(self, k: int) -> list[nn.Module]:
        """Branch ``k``'s head layers in order (0-based; 0 is the base network's own)."""
        if not 0 <= k < self.branches:
            raise InvalidParameterError(f"branch {k} does not exist; 0 .. {self.branches - 1}")
        if k == 0:
            return [self.base.get_submodule(name) for name in self.head_names]
        head = self.heads[k - 1]
        assert isinstance(head, nn.ModuleList)
        return list(head)

    def head_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters of branch ``k``'s head (0-based; 0 is the base network's own)."""
        return [p for layer in self.head_modules(k) for p in layer.parameters()]

    def branch(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Branch ``k``'s logits (0-based): the trunk, then head ``k``."""
        if not 0 <= k < self.branches:
            raise InvalidParameterError(f"branch {k} does not exist; 0 .. {self.branches - 1}")
        if k == 0:
            return self.base(x)  # type: ignore[no-any-return]
        overrides: dict[str, torch.Tensor] = {
            f"{name}.{pname}": value
            for name, layer in zip(self.head_names, self.head_modules(k), strict=True)
            for pname, value in layer.named_parameters()
        }
        return functional_call(self.base, overrides, (x,))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Branch 1 (the clean branch)."""
        return self.base(x)  # type: ignore[no-any-return]


class Branch(nn.Module):
    """One branch of a :class:`SharedTrunkBranches` as a classifier of its own (a view).

    Args:
        network: the shared-trunk network.
        k: the branch, 0-based.
    """

    def __init__(self, network: SharedTrunkBranches, k: int) -> None:
        super().__init__()
        if not 0 <= k < network.branches:
            raise InvalidParameterError(f"branch {k} does not exist; 0 .. {network.branches - 1}")
        self.network = network
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Branch ``k``'s logits."""
        return self.network.branch(x, self.k)
