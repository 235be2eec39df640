"""The Ray executor: a study's trainings and cells as tasks on a Ray cluster.

The study is planned on the driver exactly as for the local executor. Then:

- every trained artefact that a pending cell needs, and is not cached yet, becomes one Ray task,
  submitted in graph order with its parents' task references as arguments, so Ray starts a
  child only when its parents are trained (each artefact is one task: trained once in the
  cluster; the cache's per-entry lock also stops two workers from training one entry);
- every part's plan is cut into :meth:`~robustlab.study.parts.base.StudyPart.shards` (a group of
  cells, a job), and each shard with unfinished results becomes a task depending on the
  trainings of the models it evaluates;
- a worker runs a shard through the part's own ``run`` into a private store and returns the
  rows; the driver, the only writer of the run's store, commits each shard as it arrives. A
  worker that dies is replaced and its task rerun (``retries``); a driver that dies loses only
  the shards in flight, and the rerun computes just those.

Workers keep the dataset and every model they loaded across tasks (module state of the worker
process), set their thread counts to the task's CPUs, and check that their data has the
driver's fingerprint. Trained weights reach them through a shared cache folder or, with
``weights: object_store``, as the cache entry's files through Ray's object store.

Example:
    >>> from robustlab.study.executor_config import ExecutorConfig
    >>> ray_environment(ExecutorConfig(name="ray"))["RAY_USAGE_STATS_ENABLED"]
    '0'
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.data.base import Dataset
from robustlab.device import limit_threads, resolve_device, tune_cpu_allocator
from robustlab.errors import ConfigError, RobustlabError
from robustlab.study.artefacts import ArtefactProvider, with_ancestors
from robustlab.study.config import StudyConfig
from robustlab.study.executor_config import ExecutorConfig
from robustlab.study.parts.base import PartRun, StudyPart
from robustlab.study.plan import PlannedModel, defense_settings
from robustlab.study.progress import SilentProgress
from robustlab.study.store import STORE_NAME, ResultsStore
from robustlab.study.study_data import data_fingerprint, prepare_dataset
from robustlab.train.cache import ModelCache

RAY_MISSING = (
    "the Ray executor needs Ray, which is an optional extra: pip install 'robustlab[ray]' "
    "(core ray only), or run with --executor local"
)

Rows = dict[str, list[tuple[Any, ...]]]


def ray_environment(options: ExecutorConfig) -> dict[str, str]:
    """Environment variables set while robustlab's private Ray cluster runs.

    No usage statistics; token authentication with a fresh token held in the environment
    (inherited by the cluster's processes), so nothing is written to the home directory.
    """
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if options.address == "local":
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": _SESSION_TOKEN})
    return env


# One token per process: Ray's token loader caches the first token it reads.
_SESSION_TOKEN = secrets.token_hex(32)


def _refresh_ray_config() -> None:
    """Make this process's Ray read the authentication mode from the environment again.

    Ray caches its configuration when it is imported; ``ray.init`` does this refresh itself
    when it turns token authentication on, through the same call.
    """
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - a Ray without this internal: nothing cached
        return
    Config.initialize("")


_shutting_down: list[threading.Thread] = []  # private clusters still being shut down


def wait_for_ray_shutdown() -> None:
    """Wait until every private cluster handed to a background shutdown has stopped.

    :func:`run_on_ray` lets its private cluster shut down (about 1.4 s here, mostly waiting for
    Ray's processes to exit) while the driver writes the results table and the report; the
    runner calls this when those are written, and :func:`ray_cluster` before it starts Ray again.

    Example:
        >>> wait_for_ray_shutdown()  # nothing pending: returns at once
    """
    while _shutting_down:
        _shutting_down.pop().join()


@contextmanager
def ray_cluster(options: ExecutorConfig, *, shutdown_in_background: bool = False) -> Iterator[Any]:
    """Connect to Ray for the ``with`` block and yield the ``ray`` module.

    ``address: local`` starts a private cluster (loopback only, no dashboard, a temporary
    directory of ours) and shuts down just that cluster afterwards; a given address is attached
    to and left running. A Ray session this process already holds (a notebook) is used as is.
    With ``shutdown_in_background`` the disconnection (and a private cluster's shut-down) runs
    in a thread after the block; :func:`wait_for_ray_shutdown` waits for it.
    """
    try:
        import ray
    except ImportError as err:
        raise ConfigError(RAY_MISSING) from err
    wait_for_ray_shutdown()
    if ray.is_initialized():
        yield ray
        return
    if options.address != "local" and options.cpus is not None:
        raise ConfigError(
            f"executor cpus ({options.cpus}) sizes only a private cluster (address: local); "
            f"the cluster at {options.address} has its own CPUs: drop cpus, or set "
            "cpus_per_task to size each task"
        )
    env = ray_environment(options)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    _refresh_ray_config()
    temp_dir = tempfile.mkdtemp(prefix="rl-ray-") if options.address == "local" else None

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _refresh_ray_config()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)

    def stop() -> None:
        try:
            ray.shutdown()
        finally:
            restore()

    try:
        if options.address == "local":
            ray.init(
                address="local",
                num_cpus=options.cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(address=options.address, log_to_driver=False, configure_logging=False)
    except ConnectionError as err:
        stop()
        raise ConfigError(
            f"cannot reach the Ray cluster at {options.address} ({err}); start it with "
            "`ray start --head` on its head node, or use --address local"
        ) from err
    except BaseException:
        stop()  # a failed start may leave processes behind
        raise
    try:
        yield ray
    except BaseException:
        stop()
        raise
    if shutdown_in_background:
        thread = threading.Thread(target=stop, name="robustlab-ray-shutdown")
        thread.start()
        _shutting_down.append(thread)
    else:
        stop()


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs to rebuild the study's context (sent with every task)."""

    config: StudyConfig
    models: list[PlannedModel]
    fingerprint: str
    data_dir: str | None
    device: str
    cache_root: str
    weights: str
    worker_cache: str | None
    cpus: int
    training_cpus: int | None = None

    def memo_key(self) -> tuple[str, ...]:
        """Identifies a worker state that tasks of this study can reuse.

        The whole study config is in it: model ids are per study, so another study in the
        same Ray session never gets this one's models.
        """
        return (
            self.config.model_dump_json(),
            str(self.data_dir),
            self.fingerprint,
            self.device,
            self.local_cache(),
        )

    def local_cache(self) -> str:
        """The cache folder this worker reads and trains into."""
        if self.weights == "shared":
            return self.cache_root
        default = Path(tempfile.gettempdir()) / f"robustlab-worker-cache-{os.getuid()}"
        return self.worker_cache or str(default)


@dataclass
class TrainResult:
    """What a training task returns: its store rows and (object store) the entry's files."""

    model_id: str
    rows: Rows
    trained: bool
    seconds: float
    files: dict[str, bytes] = field(default_factory=dict)  # path relative to the cache root


@dataclass
class ShardResult:
    """What a shard task returns."""

    rows: Rows
    ran: int
    seconds: float


@dataclass
class _WorkerState:
    dataset: Dataset
    provider: ArtefactProvider


_WORKERS: dict[tuple[str, ...], _WorkerState] = {}
_KEEP_STATES = 2  # studies whose data and models a worker keeps loaded


def _worker_state(setup: WorkerSetup, store: ResultsStore) -> _WorkerState:
    """The dataset and model provider of this worker process, built once per study setup."""
    if not _WORKERS:
        # A Ray worker process runs only this job's tasks, so it takes the allocator setting
        # the command line takes: without it every batch's activations are fresh mmap pages,
        # and the quickstart's cells took 1.5x as long on a worker as in `robustlab run`.
        tune_cpu_allocator()
    limit_threads(setup.cpus)
    key = setup.memo_key()
    state = _WORKERS.get(key)
    if state is None:
        dataset = prepare_dataset(setup.config, setup.data_dir)
        found = data_fingerprint(dataset)
        if found != setup.fingerprint:
            raise RobustlabError(
                f"this Ray node's copy of dataset '{setup.config.dataset.name}' differs from the "
                f"driver's (fingerprint {found}, driver {setup.fingerprint}); give every node "
                "the same data directory contents (ROBUSTLAB_DATA or --data-dir)"
            )
        device = resolve_device(setup.device)
        provider = ArtefactProvider(
            dataset, store, device=device, cache=ModelCache(setup.local_cache())
        )
        while len(_WORKERS) >= _KEEP_STATES:  # the oldest study's models are let go
            del _WORKERS[next(iter(_WORKERS))]
        state = _WORKERS[key] = _WorkerState(dataset, provider)
    state.provider.store = store
    return state


def _materialise(root: Path, bundles: tuple[TrainResult, ...]) -> None:
    """Write shipped cache files into this node's cache (object store mode), atomically."""
    for bundle in bundles:
        for relative, data in bundle.files.items():
            target = root / relative
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)


@contextmanager
def _private_store() -> Iterator[ResultsStore]:
    folder = tempfile.mkdtemp(prefix="rl-shard-")
    store = ResultsStore(Path(folder) / STORE_NAME)
    try:
        yield store
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def _entry_files(cache: ModelCache, key: str, epochs: int) -> dict[str, bytes]:
    stem = f"epoch-{epochs:04d}"
    folder = cache.root / key
    names = [f"{stem}.safetensors", f"{stem}.json", "recipe.json"]
    return {f"{key}/{n}": (folder / n).read_bytes() for n in names if (folder / n).exists()}


def train_artefact(setup: WorkerSetup, planned: PlannedModel, *parents: TrainResult) -> TrainResult:
    """Ray task: provide (train, or serve from the cache) one artefact."""
    began = time.perf_counter()
    with _private_store() as store:
        state = _worker_state(setup, store)
        limit_threads(setup.training_cpus or setup.cpus)
        cache = state.provider.cache
        if setup.weights == "object_store":
            _materialise(cache.root, parents)
        trained_before = len(state.provider.trained)
        state.provider.provide(planned)
        trained = len(state.provider.trained) > trained_before
        files: dict[str, bytes] = {}
        if setup.weights == "object_store":
            assert planned.recipe is not None
            files = _entry_files(cache, state.provider.cache_key(planned), planned.recipe.epochs)
        return TrainResult(
            planned.id, store.export_rows(), trained, time.perf_counter() - began, files
        )


def run_shard(
    setup: WorkerSetup, part: StudyPart[Any], plan: Any, *trainings: TrainResult
) -> ShardResult:
    """Ray task: run one shard of a part into a private store and return its rows."""
    began = time.perf_counter()
    with _private_store() as store:
        state = _worker_state(setup, store)
        if setup.weights == "object_store":
            _materialise(state.provider.cache.root, trainings)
        context = PartRun(
            setup.config, state.dataset, store, state.provider, setup.fingerprint,
            models=setup.models,
        )  # fmt: skip
        ran = part.run(plan, context)
        return ShardResult(store.export_rows(), ran, time.perf_counter() - began)


def _trained(model: PlannedModel) -> bool:
    return model.recipe is not None and model.composite is None and model.source is None


@dataclass
class RayRun:
    """One study on Ray: what the driver submitted and what came back."""

    ray: Any
    setup: WorkerSetup
    options: ExecutorConfig
    store: ResultsStore
    provider: ArtefactProvider  # the driver's: cache keys and lookups, never trains
    progress: SilentProgress
    trainings: dict[str, Any] = field(default_factory=dict)  # model id -> ObjectRef
    labels: dict[Any, str] = field(default_factory=dict)  # ObjectRef -> what it computes
    parts: dict[Any, str] = field(default_factory=dict)  # shard ObjectRef -> part name
    task_seconds: list[float] = field(default_factory=list)
    setup_ref: Any = None  # the setup, put in the object store once for every task

    def resources(self, training: bool = False) -> dict[str, Any]:
        """Ray resource options of a shard task, or of a training task."""
        gpus = self.options.gpus_per_task
        if gpus is None:
            has_gpu = self.ray.cluster_resources().get("GPU", 0) > 0
            gpus = 1.0 if self.setup.device != "cpu" and has_gpu else 0.0
        if self.setup.device.startswith("cuda") and not gpus:
            raise ConfigError(
                f"--device {self.setup.device} but the tasks get no GPU: the cluster has none, "
                "or gpus_per_task is 0; use --device auto or cpu, or give gpus_per_task"
            )
        cpus = self.options.cpus_per_task
        if training and self.options.cpus_per_training is not None:
            cpus = self.options.cpus_per_training
        return {
            "num_cpus": cpus,
            "num_gpus": gpus,
            "max_retries": self.options.retries,
        }

    def cached_bundle(self, planned: PlannedModel) -> TrainResult | None:
        """The driver's cached copy of a trained artefact, or None."""
        assert planned.recipe is not None
        dataset = self.provider.dataset
        parents = self.provider.parent_refs(planned)
        if self.provider.cache.lookup(planned.recipe, dataset.train.fingerprint(), parents) is None:
            return None
        files = {}
        if self.setup.weights == "object_store":
            key = self.provider.cache_key(planned)
            files = _entry_files(self.provider.cache, key, planned.recipe.epochs)
        return TrainResult(planned.id, {}, False, 0.0, files)

    def training(self, planned: PlannedModel, remote: Any, resources: dict[str, Any]) -> Any:
        """The reference to ``planned``'s training (submitted once; cached ones put as is)."""
        if planned.id in self.trainings:
            return self.trainings[planned.id]
        parents = [
            self.training(parent, remote, resources)
            for _, parent in planned.parents
            if _trained(parent)
        ]
        cached = self.cached_bundle(planned)
        if cached is not None:
            ref = self.ray.put(cached)
        else:
            ref = remote.options(**resources, name=f"train {planned.id}").remote(
                self.setup_ref, planned, *parents
            )
            self.labels[ref] = f"training {planned.id}"
        self.trainings[planned.id] = ref
        return ref


def run_on_ray(
    planned: list[tuple[StudyPart[Any], Any]],
    *,
    config: StudyConfig,
    models: list[PlannedModel],
    provider: ArtefactProvider,
    fingerprint: str,
    data_dir: str | os.PathLike[str] | None,
    device: str,
    options: ExecutorConfig,
    progress: SilentProgress,
) -> dict[str, tuple[int, int]]:
    """Run every unfinished shard of ``planned`` on Ray; returns part -> (computed, total).

    Raises:
        ConfigError: without Ray, or when the cluster cannot be reached.
        RobustlabError: the first task that failed (after every other task has finished and
            been stored, so nothing computed is lost).
    """
    store = provider.store
    setup = WorkerSetup(
        config=config,
        models=models,
        fingerprint=fingerprint,
        data_dir=str(data_dir) if data_dir is not None else os.environ.get("ROBUSTLAB_DATA"),
        device=device,
        cache_root=str(provider.cache.root.resolve()),
        weights=options.weights,
        worker_cache=options.worker_cache,
        cpus=options.cpus_per_task,
        training_cpus=options.cpus_per_training,
    )
    ran = {part.name: 0 for part, _ in planned}
    totals = {part.name: part.size(plan) for part, plan in planned}
    with ray_cluster(options, shutdown_in_background=True) as ray:
        run = RayRun(ray, setup, options, store, provider, progress)
        run.setup_ref = ray.put(setup)
        resources, training_resources = run.resources(), run.resources(training=True)
        train_remote = ray.remote(train_artefact)
        shard_remote = ray.remote(run_shard)
        evaluated = [m for m in models if m.evaluated]
        # A study's denoiser used as a defence runs in every shard of every model.
        fronts = [d.artefact for d in defense_settings(config) if d.artefact is not None]
        for part, plan in planned:
            for shard in part.shards(plan):
                if part.done(shard.plan, store) >= part.size(shard.plan):
                    continue
                shard_models = shard.models if shard.models is not None else evaluated
                needs = with_ancestors([*shard_models, *fronts])
                deps = [
                    run.training(m, train_remote, training_resources) for m in needs if _trained(m)
                ]
                ref = shard_remote.options(**resources, name=f"{part.name}: {shard.label}").remote(
                    run.setup_ref, part, shard.plan, *deps
                )
                run.labels[ref] = f"{part.name}: {shard.label}"
                run.parts[ref] = part.name
        began = time.perf_counter()
        _drain(run, ran)
        wall = time.perf_counter() - began
        if run.task_seconds:
            progress.log(
                f"ray: {len(run.task_seconds)} tasks, {sum(run.task_seconds):.1f} s of task "
                f"time in {wall:.1f} s on {ray.cluster_resources().get('CPU', 0):g} CPUs"
            )
    return {name: (ran[name], totals[name]) for name in ran}


def _drain(run: RayRun, ran: dict[str, int]) -> None:
    """Commit results as tasks finish; raise the first failure once all have ended."""
    ray = run.ray
    pending = list(run.labels)
    task = run.progress.start(f"ray: {len(pending)} tasks", len(pending)) if pending else -1
    failure: tuple[str, BaseException] | None = None
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ref = ready[0]
        label = run.labels[ref]
        try:
            result = ray.get(ref)
        except Exception as err:  # a task's error; others may still finish and be kept
            failure = failure or (label, err)
            run.progress.advance(task, 1)
            continue
        if isinstance(result, TrainResult):
            run.store.import_rows(_driver_paths(result.rows, run))
            _materialise(run.provider.cache.root, (result,))
            if result.trained:
                run.provider.trained.append(result.model_id)
                run.progress.log(f"trained {result.model_id} in {result.seconds:.1f} s (ray)")
        else:
            run.store.import_rows(_driver_paths(result.rows, run))
            ran[run.parts[ref]] += result.ran
        run.task_seconds.append(result.seconds)
        run.progress.advance(task, 1)
    run.progress.finish(task)
    if failure is not None:
        label, error = failure
        cause = getattr(error, "cause", None) or error
        if isinstance(cause, RobustlabError):
            raise RobustlabError(f"{label}: {cause}") from error
        raise RobustlabError(
            f"{label} failed on a Ray worker: {type(cause).__name__}: {cause}; every other "
            "finished result is stored, and a rerun computes only what is missing"
        ) from error


def _driver_paths(rows: Rows, run: RayRun) -> Rows:
    """Model paths as the driver names its cache (workers see it resolved, or node-local)."""
    worker_root = run.setup.local_cache()
    driver_root = str(run.provider.cache.root)
    if worker_root == driver_root:
        return rows
    models = [
        (model_id, driver_root + path[len(worker_root) :] if path.startswith(worker_root) else path,
         card)
        for model_id, path, card in rows.get("models", [])
    ]  # fmt: skip
    return {**rows, "models": models}
