"""One process of tests/test_multiprocess.py: trains two small tasks with ``fit`` on ``4 / num_processes`` CPU
devices per process (gloo collectives between processes) and prints one JSON line with the results.

Usage: ``python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR``. The tasks: CIFAR-style
training on device (every process holds the whole data, as ``image_classification_task`` does) and a host
stream (each process yields its own rows of every global batch and evaluates its own shard of the test set, as
the ImageNet pipeline does).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

process_id, num_processes, port, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={4 // num_processes}"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)

import itertools  # noqa: E402

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from visattn_jax import train  # noqa: E402
from visattn_jax.resnet import ResNet  # noqa: E402

GLOBAL_BATCH, EVAL_BATCH, NUM_TRAIN, NUM_TEST = 16, 8, 64, 20


def config(steps: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            seed=0, num_steps=steps, batch_size=GLOBAL_BATCH, log_every=1, eval_every=0, checkpoint_every=2,
            num_devices=None, optimizer="momentum", learning_rate=0.1, momentum=0.9, schedule="constant",
            decay_steps=0, decay_factor=1.0, grad_clip_norm=0.0, weight_decay=1e-4,
        )
    )  # fmt: skip


def model() -> ResNet:
    return ResNet((1, 1), block="basic", layout="cifar", widths=(8, 16), num_classes=10, stem_features=8)


rng = np.random.default_rng(0)
images = rng.integers(0, 256, (NUM_TRAIN, 16, 16, 3), dtype=np.uint8)
labels = rng.integers(0, 10, NUM_TRAIN).astype(np.int32)
normalized = ((images.astype(np.float32) / 255.0) - 0.5) / 0.25

on_device = train.image_classification_task(
    model(),
    train_images=images,
    train_labels=labels,
    test_images=images[:NUM_TEST],
    test_labels=labels[:NUM_TEST],
    batch_size=GLOBAL_BATCH,
    mean=(0.5,) * 3,
    std=(0.25,) * 3,
    eval_batch_size=EVAL_BATCH,
)

local_batch = GLOBAL_BATCH // num_processes


def stream(start: int):
    """This process's rows of each global batch (the global batch of step s: examples 16 s ... 16 s + 15)."""
    for step in itertools.count(start):
        index = (step * GLOBAL_BATCH + np.arange(GLOBAL_BATCH)) % NUM_TRAIN
        mine = index[process_id * local_batch : (process_id + 1) * local_batch]
        yield {"image": normalized[mine], "label": labels[mine]}


# This process's shard of the test set (contiguous, as tfds.even_splits), in batches of EVAL_BATCH / processes.
shard = np.array_split(np.arange(NUM_TEST), num_processes)[process_id]
local_eval = EVAL_BATCH // num_processes
eval_batches = [
    {"image": normalized[shard[i : i + local_eval]], "label": labels[shard[i : i + local_eval]]}
    for i in range(0, len(shard), local_eval)
]
host_stream = train.stream_classification_task(
    model(), train_stream=stream, eval_batches=eval_batches, image_shape=(16, 16, 3), steps_per_epoch=4
)

results = {}
for name, task in (("on_device", on_device), ("stream", host_stream)):
    state, summary = train.fit(task, config(4), workdir / name, progress=False)
    leaves = jax.tree_util.tree_leaves(jax.device_get({**state.params, **state.model_state}))
    results[name] = {"final": summary["final"], "params": [np.asarray(leaf).ravel().tolist() for leaf in leaves]}
results["devices"], results["processes"] = jax.device_count(), jax.process_count()
print("RESULT " + json.dumps(results), flush=True)
