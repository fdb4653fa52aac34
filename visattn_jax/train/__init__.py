"""The shared training loop and the experiment entry point."""

from visattn_jax.train.classification import classification_task, make_test_set
from visattn_jax.train.experiment import load_digits, train_and_evaluate
from visattn_jax.train.loop import Task, TrainState, fit, make_mesh, make_optimizer, restore_params

__all__ = [
    "Task",
    "TrainState",
    "classification_task",
    "fit",
    "load_digits",
    "make_mesh",
    "make_optimizer",
    "make_test_set",
    "restore_params",
    "train_and_evaluate",
]
