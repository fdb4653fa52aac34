"""The training loop every experiment shares: pure steps under jit, data parallel, checkpointed, logged.

An experiment supplies a :class:`Task` (how to initialise its parameters, how to make a training batch on
device from a key, its pure loss, its evaluation); :func:`fit` knows nothing about models. One step:

    key_t = fold_in(key, step) -> batch = task.train_batch(key_t)  (sharded over the mesh's "data" axis)
    -> (loss, metrics), grads = value_and_grad(task.loss_fn)(params, batch, key_t) -> optax update

Data parallelism: the batch is sharded over all devices of a 1-D mesh (``jax.sharding``), the parameters and
optimiser state are replicated; XLA inserts the gradient all-reduce. The same code runs on 1 or N devices (and
on several hosts after ``jax.distributed.initialize()``, with the global batch split across them).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["Task", "TrainState", "fit", "make_mesh", "make_optimizer", "restore_params"]

Batch = Any
Metrics = dict[str, jax.Array]


class Task(NamedTuple):
    """What an experiment gives the loop. All functions are pure and jit-compatible.

    Attributes:
      init: ``key -> params``.
      train_batch: ``key -> batch``: a fresh training batch, made on device (a pytree of ``[B, ...]`` arrays).
      loss_fn: ``(params, batch, key) -> (scalar loss, metrics dict of scalars)``.
      eval_fn: ``(params, batch) -> dict of per-batch sums`` (e.g. ``correct``, ``count``, ``loss_sum``).
      eval_batches: the fixed evaluation set as a sequence of batches (host or device arrays).
      summarize: ``dict of summed eval metrics -> dict of reported numbers`` (e.g. error in %).
    """

    init: Callable[[jax.Array], Any]
    train_batch: Callable[[jax.Array], Batch]
    loss_fn: Callable[[Any, Batch, jax.Array], tuple[jax.Array, Metrics]]
    eval_fn: Callable[[Any, Batch], Metrics]
    eval_batches: Iterable[Batch]
    summarize: Callable[[dict[str, float]], dict[str, float]]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree); the optimiser itself is static."""

    step: jax.Array  # [] int32
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)


def make_optimizer(config) -> optax.GradientTransformation:
    """optax optimiser from ``config.optimizer`` (sgd | momentum | nesterov | adam) and its schedule.

    Schedule (``config.schedule``): ``"step"`` multiplies the rate by ``config.decay_factor`` every
    ``config.decay_steps`` (the STN paper: x0.1 every 50k), ``"cosine"`` decays to 0 over ``config.num_steps``,
    ``"constant"``. ``config.grad_clip_norm > 0`` clips the global gradient norm first.
    """
    lr = config.learning_rate
    if config.schedule == "step":
        boundaries = range(config.decay_steps, config.num_steps, config.decay_steps)
        schedule = optax.piecewise_constant_schedule(lr, {b: config.decay_factor for b in boundaries})
    elif config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(config.num_steps, 1))
    elif config.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    else:
        raise ValueError(f"Unknown schedule {config.schedule!r}; choose step, cosine or constant.")
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
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optimizers[config.optimizer]())
    return optax.chain(*parts)


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (default: all, on all hosts)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are available.")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), ("data",))


def _make_train_step(task: Task, mesh: Mesh):
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def train_step(state: TrainState, key: jax.Array) -> tuple[TrainState, Metrics]:
        step_key = jax.random.fold_in(key, state.step)
        batch_key, loss_key = jax.random.split(step_key)
        batch = jax.lax.with_sharding_constraint(task.train_batch(batch_key), data_sharding)
        (loss, metrics), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(state.params, batch, loss_key)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(
        train_step, in_shardings=(replicated, replicated), out_shardings=(replicated, replicated), donate_argnums=0
    )


def _evaluate(task: Task, eval_step, params, mesh: Mesh) -> dict[str, float]:
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    totals = None
    for batch in task.eval_batches:
        size = jax.tree_util.tree_leaves(batch)[0].shape[0]
        # Split over the devices where the batch divides evenly; a ragged last batch is replicated instead.
        batch = jax.device_put(batch, data_sharding if size % mesh.size == 0 else replicated)
        sums = eval_step(params, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}  # one transfer per evaluation
    return task.summarize(totals)


class _MetricsLog:
    """Scalars to TensorBoard event files (tensorboardX) and to ``metrics.jsonl`` in the work folder."""

    def __init__(self, workdir: Path):
        self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tensorboard"))
        except ImportError:  # TensorBoard files are optional; the JSONL log is always written.
            self._tb = None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def fit(task: Task, config, workdir: str | Path, *, progress: bool = True) -> tuple[TrainState, dict[str, Any]]:
    """Trains ``task`` for ``config.num_steps`` steps, resuming from the latest checkpoint in ``workdir``.

    Config fields used: ``seed``, ``num_steps``, ``batch_size``, ``log_every``, ``eval_every`` (0: only at the
    end), ``checkpoint_every`` (0: only at the end), ``num_devices`` (None: all), and the optimiser fields of
    :func:`make_optimizer`.

    Writes to ``workdir``: ``checkpoints/`` (orbax; a rerun resumes from the last one and reaches the same
    parameters as an uninterrupted run), ``metrics.jsonl`` and TensorBoard files, ``summary.json``.

    Returns:
      The final state and the summary (final evaluation, wall time, throughput).

    Raises:
      FloatingPointError: the loss became NaN or infinite (checked at every log step).
    """
    import orbax.checkpoint as ocp

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(config.get("num_devices"))
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {mesh.size} devices.")
    replicated = NamedSharding(mesh, PartitionSpec())

    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    tx = make_optimizer(config)
    state = jax.device_put(TrainState.create(task.init(init_key), tx), replicated)
    train_key = jax.device_put(train_key, replicated)

    manager = ocp.CheckpointManager(
        workdir / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )
    start = 0
    if manager.latest_step() is not None:
        start = manager.latest_step()
        restored = manager.restore(start, args=ocp.args.StandardRestore(jax.device_get(state)))
        state = jax.device_put(restored, replicated)
        print(f"Resumed from the checkpoint at step {start} in {workdir / 'checkpoints'}.")

    train_step = _make_train_step(task, mesh)
    eval_step = jax.jit(task.eval_fn)
    log = _MetricsLog(workdir)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, initial=start, unit="step", dynamic_ncols=True)

    def save(step: int) -> None:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)

    history = []
    started = time.perf_counter()
    # Throughput excludes the first log window (compilation) and evaluations.
    window_start, window_steps, train_seconds, timed_steps, first_window = started, 0, 0.0, 0, True
    images_per_step = config.batch_size
    try:
        for step in range(start, config.num_steps):
            state, metrics = train_step(state, train_key)
            window_steps += 1
            done = step + 1
            if done % config.log_every == 0 or done == config.num_steps:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}  # syncs: only at log steps
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(
                        f"Training diverged at step {done}: {metrics}. Lower the learning rate or clip gradients "
                        f"(config.grad_clip_norm); the last good checkpoint is in {workdir / 'checkpoints'}."
                    )
                now = time.perf_counter()
                metrics["images_per_second"] = window_steps * images_per_step / (now - window_start)
                if not first_window:
                    train_seconds += now - window_start
                    timed_steps += window_steps
                window_start, window_steps, first_window = now, 0, False
                log.write(done, metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_second']:.0f}")
                    bar.update(config.log_every if done % config.log_every == 0 else done % config.log_every)
            if config.eval_every and done % config.eval_every == 0 and done != config.num_steps:
                evaluation = _evaluate(task, eval_step, state.params, mesh)
                log.write(done, {f"eval/{k}": v for k, v in evaluation.items()})
                history.append({"step": done, **evaluation})
                window_start = time.perf_counter()  # evaluation time is not training throughput
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                save(done)
        if config.num_steps > start and manager.latest_step() != config.num_steps:
            save(config.num_steps)
        manager.wait_until_finished()
        evaluation = _evaluate(task, eval_step, state.params, mesh)
        log.write(config.num_steps, {f"eval/{k}": v for k, v in evaluation.items()})
    finally:
        if bar is not None:
            bar.close()
        manager.close()
        log.close()
    steps_run = config.num_steps - start
    summary = {
        "final": evaluation,
        "history": history,
        "steps": config.num_steps,
        "steps_this_run": steps_run,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "train_images_per_second": round(timed_steps * images_per_step / train_seconds, 1) if train_seconds else None,
        "devices": mesh.size,
        "platform": jax.devices()[0].platform,
    }
    return state, summary


def restore_params(workdir: str | Path) -> Any:
    """The parameters of the latest checkpoint that :func:`fit` wrote in ``workdir`` (a host pytree)."""
    import orbax.checkpoint as ocp

    directory = Path(workdir).absolute() / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"No checkpoints in {directory}: train first (experiments.main --workdir={workdir}).")
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"No checkpoints in {directory}.")
        return manager.restore(step, args=ocp.args.StandardRestore())["params"]
