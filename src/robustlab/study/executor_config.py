"""Where a study's trainings and cells run: in this process, or as tasks on a Ray cluster.

The ``executor:`` block of a study file (or ``--executor``, ``--address``, ``--cpus`` on the
command line, which override it) chooses. The local executor is the default and needs nothing
beyond robustlab; ``ray`` needs ``pip install robustlab[ray]`` (see ``docs/ray.md``). Whichever
runs it, a study gives the same numbers: the executor is not part of any cell or cache key.

Example:
    >>> ExecutorConfig().name
    'local'
    >>> ExecutorConfig(name="ray", cpus=2).cpus_per_task
    1
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExecutorConfig(BaseModel):
    """How a study runs (``executor:`` in YAML).

    Attributes:
        name: ``local`` (this process) or ``ray`` (trainings and cells as Ray tasks).
        address: the Ray cluster. ``local`` starts a private cluster on this machine, bound to
            the loopback interface, and shuts it down afterwards; ``HOST:PORT`` or
            ``ray://HOST:PORT`` attach to a running cluster. Never ``auto``, which may attach
            to somebody else's cluster.
        cpus: local executor: threads PyTorch and OpenCV may use (default: PyTorch's own
            choice). Ray with ``address: local``: the CPUs of the private cluster (default:
            the machine's); refused with an existing cluster, which has its own.
        cpus_per_task: CPUs (and threads) each Ray task gets.
        cpus_per_training: CPUs (and threads) each training task gets (default:
            ``cpus_per_task``). A study with few trainings (the quickstart's one) trains
            faster with all of a node's CPUs; a wide graph (cavey's 240) with one each.
        gpus_per_task: GPUs each Ray task gets (a fraction such as 0.25 shares one GPU
            between tasks); default 0 with ``--device cpu``, else 1 when the cluster has GPUs.
        weights: how Ray workers get trained weights: ``shared`` reads the model cache folder,
            which every node must see at the same path (a shared file system); ``object_store``
            ships each trained model's files through Ray's object store to a node-local cache.
        worker_cache: with ``object_store``, the node-local cache folder (default: a
            ``robustlab-worker-cache`` folder in each node's temporary directory).
        retries: how often Ray reruns a task whose worker died.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["local", "ray"] = "local"
    address: str = "local"
    cpus: int | None = Field(None, ge=1)
    cpus_per_task: int = Field(1, ge=1)
    cpus_per_training: int | None = Field(None, ge=1)
    gpus_per_task: float | None = Field(None, ge=0)
    weights: Literal["shared", "object_store"] = "shared"
    worker_cache: str | None = None
    retries: int = Field(3, ge=0, le=100)

    @field_validator("address")
    @classmethod
    def _not_auto(cls, value: str) -> str:
        if value.strip() in ("auto", ""):
            raise ValueError(
                "address 'auto' could attach to another user's Ray cluster; give 'local' (a "
                "private cluster on this machine) or the cluster's HOST:PORT"
            )
        return value.strip()
