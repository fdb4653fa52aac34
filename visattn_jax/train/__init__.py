"""The shared training loop, the tasks it runs, and the experiment entry point."""

from visattn_jax.train.classification import (
    classification_task,
    image_classification_task,
    stream_classification_task,
)
from visattn_jax.train.experiment import (
    BuiltTask,
    ConfigError,
    build_model,
    build_task,
    train_and_evaluate,
)
from visattn_jax.train.loop import (
    Task,
    TrainState,
    TrainStep,
    create_train_state,
    fit,
    make_mesh,
    make_optimizer,
    make_schedule,
    make_train_step,
    resolve_epochs,
    restore_params,
    restore_variables,
)

__all__ = [
    "BuiltTask",
    "ConfigError",
    "Task",
    "TrainState",
    "TrainStep",
    "build_model",
    "build_task",
    "classification_task",
    "create_train_state",
    "fit",
    "image_classification_task",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "resolve_epochs",
    "restore_params",
    "restore_variables",
    "stream_classification_task",
    "train_and_evaluate",
]
