"""The training loop every experiment shares: pure steps under jit, data parallel, checkpointed, logged.

An experiment supplies a :class:`Task` (how to initialise its parameters and model state, where a training
batch comes from, its pure loss, its evaluation); :func:`fit` knows nothing about models. One step:

    batch = task.train_batch(key, step, data)   (made on device from the run's key, the step and the task's
    train_data, which is an argument of the compiled step, replicated on every device), or the next batch of
    task.train_stream (a host pipeline, placed on the mesh as a global array)
    -> (loss, (metrics, model_state)), grads = value_and_grad(task.loss_fn)(params, model_state, batch, key_t)
       (key_t: a key folded from the run's key and the step)
    -> optax update (-> parameter EMA, if configured)

Model state (BatchNorm statistics) lives in the train state beside the parameters and is replaced by what
the loss returns; stateless models carry an empty dict. Data parallelism: the batch is sharded over all
devices of a 1-D mesh (``jax.sharding``), the parameters, model state and optimiser state are replicated;
XLA inserts the gradient all-reduce, and a BatchNorm's batch mean is a mean over the global (sharded) batch,
so 1 and N devices compute the same step. The same code runs on 1 or N devices (and on several hosts after
``jax.distributed.initialize()``, with the global batch split across them).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "CPU_CONV_OPTIONS",
    "Task",
    "TrainState",
    "TrainStep",
    "create_train_state",
    "fit",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "make_schedule",
    "provenance",
    "resolve_epochs",
    "restore_params",
    "restore_variables",
]

Batch = Any
Metrics = dict[str, jax.Array]


class Task(NamedTuple):
    """What an experiment gives the loop. All functions but ``train_stream`` are pure and jit-compatible.

    Attributes:
      init: ``key -> (params, model_state)``; ``model_state`` is ``{}`` for models without state, or e.g.
        ``{"batch_stats": ...}``.
      train_batch: ``(key, step, data) -> batch``: the training batch of ``step``, made on device (a pytree of
        ``[B, ...]`` arrays) from ``data`` (the task's ``train_data``). ``key`` is the run's data key, the same
        at every step (so a task can draw one permutation per epoch from it); fold ``step`` in for per-step
        randomness. None when the task has a ``train_stream``.
      loss_fn: ``(params, model_state, batch, key) -> (scalar loss, (metrics dict of scalars, new model_state))``.
      eval_fn: ``(params, model_state, batch) -> dict of per-batch sums`` (``correct``, ``count``, ...).
      eval_batches: the fixed evaluation set as a sequence of batches (host or device arrays).
      summarize: ``dict of summed eval metrics -> dict of reported numbers`` (e.g. error in %).
      train_stream: ``start_step -> iterator of host batches`` (NumPy, this process's share of the global
        batch), for data read and augmented on the host (ImageNet); it must yield the batch of step
        ``start_step`` first, so a resumed run sees the same data order. None for on-device data.
      steps_per_epoch: training steps per pass over the data (0: the task has no epochs); it turns the
        ``*_epochs`` fields of a config into steps.
      train_data: what ``train_batch`` draws from (a pytree of host or device arrays, e.g. the whole CIFAR
        training set), or None. It is an argument of the compiled step, placed once on every device
        (replicated), never a constant baked into the program: a compile needs only its shapes
        (``jax.ShapeDtypeStruct``), and every chip reads its own copy.
      eval_per_process: False: ``eval_batches`` is the whole evaluation set, the same in every process.
        True: it is this process's share (a host pipeline reading its own shard, e.g. ImageNet's validation
        split), in batches of one size but for a smaller last one, possibly a different number per process.
        The loop then gives every batch a float ``mask`` (1 for a real example, 0 for padding), pads it to the
        local batch size, and runs until every process is done (a process that has finished feeds
        fully masked batches), so ``eval_fn`` must weight its sums by ``batch["mask"]``.
    """

    init: Callable[[jax.Array], tuple[Any, Any]]
    train_batch: Callable[[jax.Array, jax.Array], Batch] | None
    loss_fn: Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, tuple[Metrics, Any]]]
    eval_fn: Callable[[Any, Any, Batch], Metrics]
    eval_batches: Iterable[Batch]
    summarize: Callable[[dict[str, float]], dict[str, float]]
    train_stream: Callable[[int], Iterator[Batch]] | None = None
    steps_per_epoch: int = 0
    train_data: Any = None
    eval_per_process: bool = False


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree); the optimiser itself is static.

    ``model_state`` holds non-trained variables (BatchNorm statistics; ``{}`` without state); ``ema_params``
    the exponential moving average of the parameters (``None`` when ``config.ema_decay`` is 0), which is what
    evaluation uses when present.
    """

    step: jax.Array  # [] int32
    params: Any
    model_state: Any
    opt_state: Any
    ema_params: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, model_state: Any = None, ema: bool = False):
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state={} if model_state is None else model_state,
            opt_state=tx.init(params),
            ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else None,
            tx=tx,
        )

    @property
    def eval_params(self) -> Any:
        """The parameters evaluation uses: the EMA when there is one."""
        return self.params if self.ema_params is None else self.ema_params


def resolve_epochs(config, steps_per_epoch: int):
    """A copy of ``config`` with its epoch-based fields turned into steps.

    ``num_epochs`` -> ``num_steps``, ``warmup_epochs`` -> ``warmup_steps``, ``decay_epochs`` (a list of
    epochs where the step schedule multiplies the rate by ``decay_factor``) -> ``decay_boundaries``. Fields
    already in steps are kept when the epoch field is absent or 0. Epochs may be fractional (a budgeted run).
    """
    import ml_collections

    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy: the caller's config is not changed
    epochs = {k: config.get(k) for k in ("num_epochs", "warmup_epochs", "decay_epochs")}
    if any(epochs.values()) and not steps_per_epoch:
        raise ValueError(
            f"The config gives {[k for k, v in epochs.items() if v]} in epochs, but the task has no epochs."
        )
    if epochs["num_epochs"]:
        config.num_steps = max(1, round(epochs["num_epochs"] * steps_per_epoch))
    if epochs["warmup_epochs"]:
        config.warmup_steps = round(epochs["warmup_epochs"] * steps_per_epoch)
    if epochs["decay_epochs"]:
        config.decay_boundaries = [round(e * steps_per_epoch) for e in epochs["decay_epochs"]]
    return config


def make_schedule(config) -> optax.Schedule:
    """Learning rate per step from ``config.schedule``.

    ``"step"``: multiplies ``config.learning_rate`` by ``config.decay_factor`` at each of
    ``config.decay_boundaries`` (steps) or, if those are absent, every ``config.decay_steps`` (the STN
    paper: x0.1 every 50k); ``"cosine"``: decays to 0 at ``config.num_steps``; ``"constant"``. A linear
    warmup from 0 over ``config.warmup_steps`` (Goyal et al.) precedes any of them.
    """
    lr = config.learning_rate
    warmup = config.get("warmup_steps", 0) or 0
    if config.schedule == "step":
        boundaries = config.get("decay_boundaries") or (
            range(config.decay_steps, config.num_steps, config.decay_steps) if config.get("decay_steps") else []
        )
        schedule = optax.piecewise_constant_schedule(lr, {int(b) - warmup: config.decay_factor for b in boundaries})
    elif config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(config.num_steps - warmup, 1))
    elif config.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    else:
        raise ValueError(f"Unknown schedule {config.schedule!r}; choose step, cosine or constant.")
    if warmup:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])
    return schedule


def _decay_mask(params: Any) -> Any:
    """True for convolution and dense kernels (ndim > 1), False for biases and BatchNorm scales and offsets."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(config) -> optax.GradientTransformation:
    """optax optimiser from ``config.optimizer`` (sgd | momentum | nesterov | adam) and :func:`make_schedule`.

    ``config.grad_clip_norm > 0`` clips the global gradient norm first. ``config.weight_decay`` adds
    ``weight_decay * params`` to the gradient (PyTorch SGD's coupled decay), to every parameter or, with
    ``config.weight_decay_mask="kernels"``, to convolution and dense kernels only (not BatchNorm parameters
    and biases). ``config.lr_scales`` (``{module name: factor}``) multiplies the learning rate of every parameter
    inside a module of that name by ``factor``: the STN paper's practice of training the localisation network
    slower than the rest (``{"transformer": 0.01}`` for a :class:`~visattn_jax.stn.STClassifier`).
    """
    schedule = make_schedule(config)
    optimizers = {
        "sgd": lambda: optax.sgd(schedule),
        "momentum": lambda: optax.sgd(schedule, momentum=config.momentum),
        "nesterov": lambda: optax.sgd(schedule, momentum=config.momentum, nesterov=True),
        "adam": lambda: optax.adam(schedule),
    }
    if config.optimizer not in optimizers:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; choose one of {sorted(optimizers)}.")
    parts = []
    if config.get("grad_clip_norm", 0.0) > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.get("weight_decay", 0.0) > 0:
        mask = config.get("weight_decay_mask", "all")
        if mask not in ("all", "kernels"):
            raise ValueError(f"Unknown weight_decay_mask {mask!r}; choose all or kernels.")
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=_decay_mask if mask == "kernels" else None))
    parts.append(optimizers[config.optimizer]())
    for name, factor in (config.get("lr_scales") or {}).items():
        if not (isinstance(factor, (int, float)) and factor >= 0):
            raise ValueError(f"lr_scales[{name!r}] must be a number >= 0; got {factor!r}.")
        # The updates are linear in the rate for every optimiser here, so scaling them scales the rate.
        parts.append(optax.masked(optax.scale(float(factor)), functools.partial(_inside_module, name)))
    return optax.chain(*parts)


def _inside_module(name: str, params: Any) -> Any:
    """True for the parameters inside a module called ``name`` (at any depth); a clear error when there is none."""

    def inside(path: tuple) -> bool:
        return any(getattr(entry, "key", None) == name for entry in path)

    mask = jax.tree_util.tree_map_with_path(lambda path, _: inside(path), params)
    if not any(jax.tree_util.tree_leaves(mask)):
        top = sorted(str(getattr(k, "key", k)) for k in (params.keys() if hasattr(params, "keys") else []))
        raise ValueError(
            f"lr_scales names module {name!r}, but no parameter lives inside a module of that name "
            f"(top-level modules: {', '.join(top) or 'none'})."
        )
    return mask


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (default: all, on all hosts)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are available.")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), ("data",))


#: XLA:CPU fuses convolutions with their elementwise neighbours through its YNN library when asked: ResNet
#: training steps run 25-35% faster on CPU (../shared/PERF.md), but the sampler slows down, so it is opt-in
#: (config.xla_cpu_fast_conv) and only ever applied to CPU compilations.
CPU_CONV_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
}


class TrainStep:
    """The loop's compiled training step: ``step(state, key, inputs) -> (state, metrics)``.

    ``key`` is the run's data key (replicated). ``inputs``: for on-device tasks the task's ``train_data``
    (replicated; the step makes its batch from it, ``key`` and ``state.step``), for tasks with a
    ``train_stream`` the step's global batch (sharded over the mesh's ``"data"`` axis). The state is donated:
    pass the returned one to the next call. ``metrics`` holds the loss, the gradient norm and the task's own
    metrics (device scalars: no host sync).

    ``jitted`` is the underlying ``jax.jit`` function (``step.jitted.lower(...)`` compiles it for other devices,
    e.g. a TPU topology); ``compiler_options`` the extra XLA options applied when it compiles here.
    """

    def __init__(self, jitted, compiler_options: dict[str, str] | None):
        self.jitted, self.compiler_options, self._compiled = jitted, compiler_options, None

    def __call__(self, state: TrainState, key: jax.Array, inputs: Any) -> tuple[TrainState, Metrics]:
        if not self.compiler_options:
            return self.jitted(state, key, inputs)
        if self._compiled is None:
            self._compiled = self.jitted.lower(state, key, inputs).compile(compiler_options=self.compiler_options)
        return self._compiled(state, key, inputs)


def make_train_step(task: Task, mesh: Mesh, *, ema_decay: float = 0.0, fast_conv: bool = False) -> TrainStep:
    """The training step :func:`fit` runs, for ``task`` on ``mesh``: the batch (made on device by
    ``task.train_batch`` from the replicated ``train_data``, or a given host batch) sharded over the ``"data"``
    axis, state and key replicated,
    ``value_and_grad`` of ``task.loss_fn`` with the step's folded key, the state's optax update, the parameter
    EMA with ``ema_decay`` (when the state has one), metrics ``loss`` / ``grad_norm`` / the task's. Benchmarks
    and the TPU compile report time and compile exactly this function.

    ``fast_conv``: compile with :data:`CPU_CONV_OPTIONS` when the mesh is on CPU (ignored elsewhere).
    """
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def train_step(state: TrainState, key: jax.Array, inputs: Any) -> tuple[TrainState, Metrics]:
        loss_key = jax.random.split(jax.random.fold_in(key, state.step))[1]
        batch = inputs if task.train_batch is None else task.train_batch(key, state.step, inputs)
        batch = jax.lax.with_sharding_constraint(batch, data_sharding)
        grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
        (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, loss_key)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None:
            ema = optax.incremental_update(params, ema, 1.0 - ema_decay)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        new_state = state.replace(
            step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state, ema_params=ema
        )
        return new_state, metrics

    in_shardings = (replicated, replicated, replicated if task.train_batch is not None else data_sharding)
    jitted = jax.jit(train_step, in_shardings=in_shardings, out_shardings=(replicated, replicated), donate_argnums=0)
    cpu = mesh.devices.flat[0].platform == "cpu"
    return TrainStep(jitted, CPU_CONV_OPTIONS if fast_conv and cpu else None)


def create_train_state(task: Task, config, key: jax.Array) -> TrainState:
    """The initial :class:`TrainState` of ``task`` under ``config`` (the optimiser of :func:`make_optimizer`, a
    parameter EMA when ``config.ema_decay`` > 0), from ``key`` (:func:`fit` passes the first half of
    ``split(PRNGKey(config.seed))``). Pure: ``jax.eval_shape(create_train_state, ...)`` gives its shapes without
    computing anything (``config`` and ``task`` bound with a lambda)."""
    params, model_state = task.init(key)
    ema = (config.get("ema_decay", 0.0) or 0.0) > 0
    return TrainState.create(params, make_optimizer(config), model_state, ema=ema)


def _global_batches(task: Task, start: int, mesh: Mesh) -> Iterator[Batch]:
    """The task's host stream as global arrays on the mesh (each process contributes its own rows)."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    for batch in task.train_stream(start):
        yield jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), batch)


def _process_local_eval_batches(task: Task, mesh: Mesh) -> Iterator[Batch]:
    """``task.eval_batches`` (this process's share) as global arrays on the mesh, each with a ``mask``: every
    process pads its batches to the local batch size, and all take part in every step until the last process
    runs out (one host-level agreement per batch: evaluation only, never in the training loop)."""
    from jax.experimental import multihost_utils

    sharding = NamedSharding(mesh, PartitionSpec("data"))
    batches = iter(task.eval_batches)
    template = None  # the first batch's shapes: padding and the finished process's empty batches
    while True:
        batch = next(batches, None)
        if batch is not None:
            batch = jax.tree_util.tree_map(np.asarray, batch)
            size = jax.tree_util.tree_leaves(batch)[0].shape[0]
            if template is None:
                template = jax.tree_util.tree_map(lambda a: np.zeros_like(a), batch)
            local = jax.tree_util.tree_leaves(template)[0].shape[0]
            if size > local:
                raise ValueError(
                    f"Evaluation batch of {size} after a first batch of {local}: only the last may differ."
                )
            padded = jax.tree_util.tree_map(
                lambda a, n=local - size: np.pad(a, [(0, n)] + [(0, 0)] * (a.ndim - 1)), batch
            )
            batch = {**padded, "mask": (np.arange(local) < size).astype(np.float32)}
        more = multihost_utils.process_allgather(np.asarray(batch is not None))
        if not np.any(more):
            return
        if batch is None:
            if template is None:
                raise ValueError("This process has no evaluation batches while others have: give it at least one.")
            batch = {**template, "mask": np.zeros(jax.tree_util.tree_leaves(template)[0].shape[0], np.float32)}
        yield jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)


def _evaluate(task: Task, eval_step, state: TrainState, mesh: Mesh) -> dict[str, float]:
    if task.eval_per_process:
        batches: Iterator[Batch] = _process_local_eval_batches(task, mesh)
    else:
        data_sharding = NamedSharding(mesh, PartitionSpec("data"))
        replicated = NamedSharding(mesh, PartitionSpec())
        # Split over the devices where the batch divides evenly; a ragged last batch is replicated instead.
        batches = (
            jax.device_put(
                b, data_sharding if jax.tree_util.tree_leaves(b)[0].shape[0] % mesh.size == 0 else replicated
            )
            for b in task.eval_batches
        )
    totals = None
    for batch in batches:
        sums = eval_step(state.eval_params, state.model_state, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("The task has no evaluation batches: its test set is empty.")
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}  # one transfer per evaluation
    return task.summarize(totals)


class _MetricsLog:
    """Scalars to TensorBoard event files (tensorboardX) and to ``metrics.jsonl`` in the work folder. On a
    multi-host run only process 0 writes (``enabled=False`` elsewhere): the work folder is shared."""

    def __init__(self, workdir: Path, start: int, *, enabled: bool = True):
        self._jsonl = self._tb = None
        if not enabled:
            return
        path = workdir / "metrics.jsonl"
        kept: list[dict[str, Any]] = []
        if path.exists():
            # A resumed run repeats the steps after its checkpoint: drop what was logged after it (and, for a
            # finished run that has nothing left to train, nothing is appended).
            lines = path.read_text().splitlines()
            records = [_record(line) for line in lines]
            kept = [record for record in records if record is not None and record["step"] <= start]
            if len(kept) != len(lines):
                path.write_text("".join(json.dumps(record) + "\n" for record in kept))
        self._jsonl = open(path, "a")  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # TensorBoard files are optional; the JSONL log is always written.
            self._tb = None
            return
        # Event files cannot be cut like the JSONL log, and TensorBoard would draw the repeated steps twice:
        # on a resume they are written anew from the kept log, which is the record of what happened.
        tb_dir = workdir / "tensorboard"
        for old in tb_dir.glob("events.out.tfevents.*") if start > 0 else ():
            old.unlink()
        self._tb = SummaryWriter(str(tb_dir))
        for record in kept if start > 0 else ():
            self._add_scalars(record["step"], record)

    def _add_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        for name, value in scalars.items():
            if name != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self._tb.add_scalar(name, value, step)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self._jsonl is None:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            self._add_scalars(step, scalars)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def fit(task: Task, config, workdir: str | Path, *, progress: bool = True) -> tuple[TrainState, dict[str, Any]]:
    """Trains ``task`` for ``config.num_steps`` steps, resuming from the latest checkpoint in ``workdir``.

    Config fields used: ``seed``, ``num_steps`` (or ``num_epochs``, see :func:`resolve_epochs`),
    ``batch_size``, ``log_every``, ``eval_every`` (0: only at the end), ``checkpoint_every`` (0: only at the
    end), ``num_devices`` (None: all), ``ema_decay`` (0: no parameter EMA), ``xla_cpu_fast_conv`` (see
    :data:`CPU_CONV_OPTIONS`), and the optimiser fields of :func:`make_optimizer`.

    Writes to ``workdir``: ``checkpoints/`` (orbax; a rerun resumes from the last one and reaches the same
    parameters as an uninterrupted run), ``metrics.jsonl`` and TensorBoard files, ``provenance.jsonl`` (one
    :func:`provenance` record per invocation). The summary records the provenance (the experiment writes it
    to ``summary.json``).

    Returns:
      The final state and the summary (final evaluation, wall time, throughput).

    Raises:
      FloatingPointError: the loss became NaN or infinite (checked at every log step).
    """
    import orbax.checkpoint as ocp

    config = resolve_epochs(config, task.steps_per_epoch)
    if (task.train_batch is None) == (task.train_stream is None):
        raise ValueError("A Task needs exactly one of train_batch (on device) and train_stream (host batches).")
    shown = Path(workdir)  # messages name the folder as the caller gave it (orbax needs the absolute path)
    workdir = shown.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(config.get("num_devices"))
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {mesh.size} devices.")
    replicated = NamedSharding(mesh, PartitionSpec())

    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    ema_decay = config.get("ema_decay", 0.0) or 0.0
    state = jax.device_put(create_train_state(task, config, init_key), replicated)
    train_key = jax.device_put(train_key, replicated)
    train_data = jax.device_put(task.train_data, replicated)  # once, on every device

    manager = ocp.CheckpointManager(
        workdir / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )
    start = 0
    if manager.latest_step() is not None:
        start = manager.latest_step()
        restored = manager.restore(start, args=ocp.args.StandardRestore(jax.device_get(state)))
        state = jax.device_put(restored, replicated)
        print(f"Resumed from the checkpoint at step {start} in {shown / 'checkpoints'}.")

    train_step = make_train_step(task, mesh, ema_decay=ema_decay, fast_conv=config.get("xla_cpu_fast_conv", False))
    eval_step = jax.jit(task.eval_fn)
    stream = _global_batches(task, start, mesh) if task.train_stream is not None else None
    # The work folder is shared by every process of a multi-host run: process 0 writes the logs (orbax
    # coordinates the checkpoints itself).
    writer = jax.process_index() == 0
    log = _MetricsLog(workdir, start, enabled=writer)
    invocations = _provenance_log(workdir, start) if writer else [{"start_step": start, **provenance()}]

    def save(step: int) -> None:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)

    started = time.perf_counter()
    # Throughput excludes the first step (compilation) and evaluations.
    window_start, window_steps, train_seconds, timed_steps = started, 0, 0.0, 0
    images_per_step = config.batch_size
    if start >= config.num_steps:
        print(f"The run in {shown} is complete ({start} of {config.num_steps} steps): evaluating it again only.")
    else:
        print(
            f"Training {config.num_steps - start} step{'s' if config.num_steps - start > 1 else ''}; the first one "
            "compiles the training step with XLA (tens of seconds on a CPU, longer for deep networks).",
            flush=True,
        )
    bar = None
    if progress:  # after the status line, so the bar does not print above it
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, initial=start, unit="step", dynamic_ncols=True)
    try:
        for step in range(start, config.num_steps):
            state, metrics = train_step(state, train_key, train_data if stream is None else next(stream))
            done = step + 1
            if step == start:  # one sync after compilation; the throughput window starts after it
                jax.block_until_ready(metrics)
                window_start = time.perf_counter()
                print(f"Compiled and ran the first step in {window_start - started:.1f} s.", flush=True)
            else:
                window_steps += 1
            if done % config.log_every == 0 or done == config.num_steps:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}  # syncs: only at log steps
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(
                        f"Training diverged at step {done}: {metrics}. Lower the learning rate or clip gradients "
                        f"(config.grad_clip_norm); the last good checkpoint is in {shown / 'checkpoints'}."
                    )
                now = time.perf_counter()
                if window_steps:
                    metrics["images_per_second"] = window_steps * images_per_step / (now - window_start)
                train_seconds += now - window_start
                timed_steps += window_steps
                window_start, window_steps = now, 0
                log.write(done, metrics)
                if bar is not None:
                    rate = metrics.get("images_per_second")
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s="compiling" if rate is None else f"{rate:.0f}")
                    bar.update(config.log_every if done % config.log_every == 0 else done % config.log_every)
            if config.eval_every and done % config.eval_every == 0 and done != config.num_steps:
                # Evaluation time is not training throughput: close the window before it, open one after it.
                jax.block_until_ready(state.step)
                train_seconds += time.perf_counter() - window_start
                timed_steps += window_steps
                evaluation = _evaluate(task, eval_step, state, mesh)
                log.write(done, {f"eval/{k}": v for k, v in evaluation.items()})
                window_start, window_steps = time.perf_counter(), 0
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                save(done)
        if config.num_steps > start and manager.latest_step() != config.num_steps:
            save(config.num_steps)
        manager.wait_until_finished()
        evaluation = _evaluate(task, eval_step, state, mesh)
        if start < config.num_steps:  # a finished run's log already ends with this evaluation
            log.write(config.num_steps, {f"eval/{k}": v for k, v in evaluation.items()})
    finally:
        if bar is not None:
            bar.close()
        manager.close()
        log.close()
    steps_run = config.num_steps - start
    summary = {
        "final": evaluation,
        "history": _evaluation_history(workdir / "metrics.jsonl", config.num_steps) if writer else [],
        "steps": config.num_steps,
        "steps_this_run": steps_run,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        # Steady-state images/s over this run's steps after the first (None if it ran fewer than two).
        "train_images_per_second": round(timed_steps * images_per_step / train_seconds, 1) if timed_steps else None,
        "devices": mesh.size,
        "steps_per_epoch": task.steps_per_epoch or None,
        "platform": jax.devices()[0].platform,
        # The code and libraries of this invocation, and of every invocation that trained part of the run.
        "provenance": invocations[-1],
        "invocations": invocations,
    }
    previous = workdir / "summary.json"
    if steps_run == 0 and previous.exists():
        # Rerunning a finished run trains nothing: keep the record of the run that did the training.
        before = json.loads(previous.read_text())
        for key in ("steps_this_run", "wall_seconds_this_run", "train_images_per_second"):
            summary[key] = before.get(key, summary[key])
    return state, summary


def provenance() -> dict[str, Any]:
    """Where a result comes from: the code version (``git describe --always --dirty`` of the checkout this
    package was imported from, None outside a git checkout), the UTC date and time, and the versions of
    Python, jax, jaxlib, flax and optax."""
    import platform
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True, timeout=30
        )
        code = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        code = None
    return {
        "commit": code or None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        **{name: version(name) for name in ("jax", "jaxlib", "flax", "optax")},
    }


def _provenance_log(workdir: Path, start: int) -> list[dict[str, Any]]:
    """Appends this invocation's :func:`provenance` (with the step it started from) to ``provenance.jsonl``
    in the work folder and returns every invocation's record: a resumed run lists each code version that
    trained part of it."""
    path = workdir / "provenance.jsonl"
    with open(path, "a") as file:
        file.write(json.dumps({"start_step": start, **provenance()}) + "\n")
    return [record for line in path.read_text().splitlines() if (record := _json_or_none(line)) is not None]


def _json_or_none(line: str) -> dict[str, Any] | None:
    """A JSON object from one line of a log, or None for a blank, cut-off or non-object line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _record(line: str) -> dict[str, Any] | None:
    """One ``metrics.jsonl`` line, or None for a blank or cut-off one (a process killed while writing it)."""
    record = _json_or_none(line)
    return record if record is not None and "step" in record else None


def _evaluation_history(metrics_jsonl: Path, final_step: int) -> list[dict[str, Any]]:
    """The intermediate evaluations of a run (resumed runs included), read back from its ``metrics.jsonl``."""
    history = []
    for line in metrics_jsonl.read_text().splitlines():
        record = _record(line)
        if record is None:
            continue
        scalars = {k.removeprefix("eval/"): v for k, v in record.items() if k.startswith("eval/")}
        if scalars and record["step"] < final_step:
            history.append({"step": record["step"], **scalars})
    return history


def _restore_latest(workdir: str | Path) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    directory = Path(workdir).absolute() / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"No checkpoints in {directory}: train first (experiments.main --workdir={workdir}).")
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"No checkpoints in {directory}.")
        return manager.restore(step, args=ocp.args.StandardRestore())


def restore_params(workdir: str | Path) -> Any:
    """The parameters of the latest checkpoint that :func:`fit` wrote in ``workdir`` (a host pytree)."""
    return _restore_latest(workdir)["params"]


def restore_variables(workdir: str | Path) -> dict[str, Any]:
    """The variables evaluation uses, from the latest checkpoint that :func:`fit` wrote in ``workdir``: the
    parameters (their EMA when the run kept one) and the model state (BatchNorm statistics), as one dict for
    ``model.apply`` (``{"params": ..., "batch_stats": ...}``; host arrays)."""
    state = _restore_latest(workdir)
    params = state["params"] if state.get("ema_params") is None else state["ema_params"]
    return {**params, **(state.get("model_state") or {})}
