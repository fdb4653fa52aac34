"""Images per second of the two input paths on this machine.

Command (the numbers in docs/benchmarks.md came from it):

    .venv/bin/python -m experiments.benchmarks.input_pipeline [--batches 20]

Rows:
  cifar on device     the CIFAR task's training batch made on device: epoch-permutation gather, pad 4 +
                      random crop + flip, normalisation (visattn_jax.data.cifar), batch 128, jitted
  imagenet train      the ImageNet host pipeline (visattn_jax.data.imagenet.pipeline) on synthetic JPEGs
                      the size of a typical ImageNet photo (500x375, quality 90): decode of the random crop
                      window, resize to 224, flip, normalise, batch 256, prefetch
  imagenet eval       the same JPEGs: decode, resize the shorter side to 256, centre crop 224, normalise
ImageNet itself is not available offline here; the synthetic JPEGs exercise the same decoding and resizing.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.common import add_output_argument, write_result


def cifar_rate(batches: int) -> float:
    from visattn_jax.data.cifar import epoch_indices, normalize, pad_crop_flip

    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8))

    @jax.jit
    def batch(step):
        key = jax.random.PRNGKey(0)
        index = epoch_indices(key, step, 50_000, 128)
        return normalize(pad_crop_flip(jax.random.fold_in(key, step), images[index]))

    batch(0).block_until_ready()
    start = time.perf_counter()
    for step in range(1, batches + 1):
        out = batch(step)
    out.block_until_ready()
    return batches * 128 / (time.perf_counter() - start)


def imagenet_rates(batches: int) -> tuple[float, float]:
    import tensorflow as tf

    from visattn_jax.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, pipeline

    rng = np.random.default_rng(0)
    # Smooth random images (upsampled noise) compress like photos, unlike white noise.
    jpegs = []
    for _ in range(64):
        small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)
        image = tf.image.resize(small, (375, 500), method="bilinear")
        jpegs.append(tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90).numpy())
    source = tf.data.Dataset.from_tensor_slices({"image": jpegs, "label": np.arange(64) % 1000})
    rates = []
    for train, batch_size in ((True, 256), (False, 250)):
        ds = source if train else source.repeat()
        ds = pipeline(
            ds, train=train, batch_size=batch_size, image_size=224, resize_size=256, seed=0, start_step=0,
            mean=IMAGENET_MEAN, std=IMAGENET_STD, shuffle_buffer=64,
        )  # fmt: skip
        iterator = iter(ds.as_numpy_iterator())
        next(iterator)  # warm-up: builds the graph and fills the prefetch buffer
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return rates[0], rates[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    add_output_argument(parser, "input_pipeline")
    args = parser.parse_args(argv)
    cifar = cifar_rate(args.batches * 10)
    train, evaluation = imagenet_rates(args.batches)
    print(f"{'input path':<22}{'images/s':>10}")
    print(f"{'cifar on device':<22}{cifar:>10.0f}")
    print(f"{'imagenet train':<22}{train:>10.0f}")
    print(f"{'imagenet eval':<22}{evaluation:>10.0f}")
    rates = {"cifar on device": cifar, "imagenet train": train, "imagenet eval": evaluation}
    write_result(args.out, {"images_per_second": {k: round(v, 1) for k, v in rates.items()}}, batches=args.batches)


if __name__ == "__main__":
    main()
