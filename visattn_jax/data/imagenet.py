"""ImageNet (ILSVRC 2012) through TFDS: a host-side tf.data pipeline that feeds the training loop.

Each process reads its own shard of the split (``tfds.even_splits(split, jax.process_count())``), decodes the
JPEGs, augments, normalises, batches its share of the global batch and prefetches; the training loop places
each batch on the mesh as part of one global array (``jax.make_array_from_process_local_data``), which is the
path that runs unchanged from one CPU to a multi-host TPU slice.

* Training: Inception-style random-resized crop (area 8%-100% of the image, aspect ratio 3/4-4/3, ten tries,
  else the centre crop), resized to ``image_size`` (bilinear), random horizontal flip. The randomness is
  stateless, seeded by ``(seed, example index)``, and the example order is a seeded shuffle, so the stream
  of a run resumed at step ``s`` (``start_step=s``) equals the uninterrupted one from step ``s`` on.
* Evaluation: resize the shorter side to ``resize_size`` (256), centre crop ``image_size`` (224).
* Both: ``(x / 255 - mean) / std`` per channel, float32 ``[B, H, W, 3]``, labels int32 ``[B]``.

Data: TFDS's ``imagenet2012`` needs the original archives (``ILSVRC2012_img_train.tar``,
``ILSVRC2012_img_val.tar``) in its manual folder, ``$TFDS_DATA_DIR/downloads/manual/``; the first use
prepares it (needs ``tensorflow``). Reading needs tensorflow too (tf.data is the pipeline).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from visattn_jax.data.mnist import DataUnavailableError, default_data_dir

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNetEval",
    "imagenet_num_examples",
    "imagenet_stream",
    "pipeline",
]

#: The per-channel mean of ImageNet's training images in [0, 1] (torchvision's and timm's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: The per-channel standard deviation of ImageNet's training images in [0, 1] (torchvision's and timm's).
IMAGENET_STD = (0.229, 0.224, 0.225)


def _builder(name: str, data_dir: str | os.PathLike | None):
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    builder = tfds.builder(name, data_dir=str(data_dir))
    if not builder.is_prepared():
        manual = data_dir / "downloads" / "manual"
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
        except Exception as error:  # TFDS raises many kinds (missing archives, no tensorflow, network)
            raise DataUnavailableError(
                f"Could not prepare {name!r} in {data_dir}: {error}\nPut ILSVRC2012_img_train.tar and "
                f"ILSVRC2012_img_val.tar into {manual} and run again (preparing needs tensorflow: "
                "pip install -e '.[data]')."
            ) from error
    return builder


def imagenet_num_examples(split: str, *, name: str = "imagenet2012", data_dir=None) -> int:
    """Number of examples in ``split`` (all processes together)."""
    return int(_builder(name, data_dir).info.splits[split].num_examples)


def _random_resized_crop(tf, image_bytes, seed, image_size: int):
    """Inception-style crop of an encoded JPEG, decoding only the crop window."""
    shape = tf.io.extract_jpeg_shape(image_bytes)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    offset_y, offset_x, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(size)
    crop = tf.io.decode_and_crop_jpeg(image_bytes, tf.stack([offset_y, offset_x, height, width]), channels=3)
    return tf.image.resize(crop, [image_size, image_size], method="bilinear")


def _resize_centre_crop(tf, image_bytes, image_size: int, resize_size: int):
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_size / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new, method="bilinear", antialias=True)
    top = (new[0] - image_size) // 2
    left = (new[1] - image_size) // 2
    return image[top : top + image_size, left : left + image_size]


def _normalise(tf, image, mean, std):
    return (image / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _dataset(
    split: str,
    *,
    train: bool,
    batch_size: int,
    seed: int,
    name: str,
    data_dir,
    **pipeline_kwargs,
):
    """This process's shard of ``split``, read by TFDS (JPEG bytes undecoded) and run through :func:`pipeline`."""
    import jax
    import tensorflow_datasets as tfds

    builder = _builder(name, data_dir)
    shard = tfds.even_splits(split, n=jax.process_count(), drop_remainder=train)[jax.process_index()]
    options = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=16 if train else 1)
    ds = builder.as_dataset(
        split=shard, shuffle_files=train, read_config=options, decoders={"image": tfds.decode.SkipDecoding()}
    )
    return pipeline(ds, train=train, batch_size=batch_size, seed=seed, **pipeline_kwargs)


def pipeline(
    ds,
    *,
    train: bool,
    batch_size: int,
    image_size: int,
    resize_size: int,
    seed: int,
    start_step: int,
    mean,
    std,
    shuffle_buffer: int,
):
    """Decode, augment (train) or resize and crop (eval), normalise, batch and prefetch a ``tf.data`` dataset
    of ``{"image": JPEG bytes, "label": int}`` examples. See the module docstring for the steps."""
    import tensorflow as tf

    if train:
        ds = ds.repeat().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.enumerate().skip(start_step * batch_size)  # resume: the same examples and the same augmentation

        def prepare(index, example):
            seed_pair = tf.stack([tf.constant(seed, tf.int64), index])
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
            image = _random_resized_crop(tf, example["image"], crop_seed, image_size)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            return {"image": _normalise(tf, image, mean, std), "label": tf.cast(example["label"], tf.int32)}
    else:

        def prepare(example):
            image = _resize_centre_crop(tf, example["image"], image_size, resize_size)
            return {"image": _normalise(tf, image, mean, std), "label": tf.cast(example["label"], tf.int32)}

    opts = tf.data.Options()
    opts.deterministic = True
    ds = ds.with_options(opts)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)


def _process_batch(global_batch_size: int) -> int:
    import jax

    if global_batch_size % jax.process_count():
        raise ValueError(f"batch_size={global_batch_size} must divide over the {jax.process_count()} processes.")
    return global_batch_size // jax.process_count()


def imagenet_stream(
    start_step: int = 0,
    *,
    global_batch_size: int,
    split: str = "train",
    image_size: int = 224,
    seed: int = 0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    name: str = "imagenet2012",
    data_dir: str | os.PathLike | None = None,
    shuffle_buffer: int = 16_384,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches for this process: ``{"image": float32 [b, S, S, 3], "label": int32 [b]}``
    with ``b = global_batch_size / process_count``, starting at training step ``start_step``."""
    ds = _dataset(
        split,
        train=True,
        batch_size=_process_batch(global_batch_size),
        image_size=image_size,
        resize_size=0,
        seed=seed,
        start_step=start_step,
        mean=mean,
        std=std,
        name=name,
        data_dir=data_dir,
        shuffle_buffer=shuffle_buffer,
    )
    import tensorflow_datasets as tfds

    yield from tfds.as_numpy(ds)


class ImageNetEval:
    """The evaluation split as a re-iterable sequence of batches (resize 256, centre crop 224); each
    ``iter()`` reads it anew. The last batch may be smaller."""

    def __init__(
        self,
        *,
        batch_size: int,
        split: str = "validation",
        image_size: int = 224,
        resize_size: int = 256,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name: str = "imagenet2012",
        data_dir: str | os.PathLike | None = None,
    ):
        if resize_size < image_size:
            raise ValueError(f"resize_size={resize_size} must be at least image_size={image_size}.")
        self._kwargs = dict(
            train=False,
            batch_size=_process_batch(batch_size),
            image_size=image_size,
            resize_size=resize_size,
            seed=0,
            start_step=0,
            mean=mean,
            std=std,
            name=name,
            data_dir=data_dir,
            shuffle_buffer=0,
        )
        self._split = split

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        import tensorflow_datasets as tfds

        return iter(tfds.as_numpy(_dataset(self._split, **self._kwargs)))
