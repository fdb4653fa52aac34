"""MNIST (and other image classification datasets) through TFDS, as device-ready arrays.

Reading a prepared dataset uses ``tfds.data_source`` and does not import TensorFlow. Preparing one (once per
machine) needs ``tensorflow`` (the CPU build is enough: ``pip install -e .[data]``). Offline, TFDS prepares
MNIST from the four original ``*-idx?-ubyte.gz`` files in its manual folder,
``$TFDS_DATA_DIR/downloads/manual/`` (default ``~/tensorflow_datasets/downloads/manual/``):
:func:`prepare_mnist` copies them there from ``source_dir`` after checking their MD5s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

__all__ = ["MNIST_FILES", "DataUnavailableError", "default_data_dir", "load_image_dataset", "prepare_mnist"]


class _TFDSAdvice(logging.Filter):
    """Drops TFDS's advice to install OpenCV for decoding: PIL decodes these small images, and the line is noise
    in every run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("OpenCV is not installed")


logging.getLogger("absl").addFilter(_TFDSAdvice())


def _quiet_tensorflow() -> None:
    """Preparing a dataset imports TensorFlow, whose C++ start-up lines (the oneDNN notice, a failed
    Google-metadata authentication attempt) say nothing about the run. Unless the user set them: no oneDNN
    custom ops (``TF_ENABLE_ONEDNN_OPTS=0``: TF only decodes and writes the images here, so its numerics do not
    matter; the notice is printed before TF's log level applies) and no INFO / WARNING logs
    (``TF_CPP_MIN_LOG_LEVEL=2``). Errors still show."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class DataUnavailableError(RuntimeError):
    """A dataset could not be found or prepared; the message says how to make it available."""


#: The original LeCun files and their well-known MD5s (the ones TFDS and torchvision check).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_HOW_TO_FIX = (
    "To prepare MNIST offline, put the four original MNIST files ({files}) into {manual} "
    "(or pass source_dir= / --mnist_dir pointing at a folder that holds them), install the data extra "
    "(pip install -e '.[data]', it brings tensorflow-cpu, needed once to prepare), and run again."
)


def default_data_dir() -> Path:
    """TFDS's data folder: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets")).expanduser()


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manual_dir(data_dir: Path) -> Path:
    return data_dir / "downloads" / "manual"


def prepare_mnist(*, data_dir: str | os.PathLike | None = None, source_dir: str | os.PathLike | None = None) -> Path:
    """Makes MNIST readable by ``tfds.data_source``: copies the original files if given, then prepares.

    Args:
      data_dir: the TFDS data folder (default :func:`default_data_dir`).
      source_dir: optional folder with the four original ``.gz`` files; each is checked against its MD5
        and copied into the manual folder if it is not there yet.

    Returns:
      The data folder.

    Raises:
      DataUnavailableError: a file is missing from ``source_dir``, a file's checksum is wrong, or TFDS could
        not prepare MNIST (no files and no network, or no tensorflow); the message says how to fix it.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    manual = _manual_dir(data_dir)
    if source_dir is not None:
        source_dir = Path(source_dir)
        manual.mkdir(parents=True, exist_ok=True)
        for name, md5 in MNIST_FILES.items():
            src = source_dir / name
            if not src.is_file():
                raise DataUnavailableError(
                    f"MNIST file {src} is missing; {source_dir} must hold {sorted(MNIST_FILES)}."
                )
            dst = manual / name
            if not dst.is_file() or _md5(dst) != md5:
                if _md5(src) != md5:
                    raise DataUnavailableError(
                        f"MNIST file {src} has the wrong checksum (expected MD5 {md5}); it is not the original."
                    )
                shutil.copyfile(src, dst)
    for name, md5 in MNIST_FILES.items():
        path = manual / name
        if path.is_file() and _md5(path) != md5:
            raise DataUnavailableError(
                f"{path} has the wrong checksum (expected MD5 {md5}): replace it with the original MNIST file."
            )

    import tensorflow_datasets as tfds

    _quiet_tensorflow()
    builder = tfds.builder("mnist", data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
        except Exception as error:  # TFDS raises many kinds here (network, missing tensorflow, files)
            hint = _HOW_TO_FIX.format(files=", ".join(MNIST_FILES), manual=manual)
            raise DataUnavailableError(f"Could not prepare MNIST in {data_dir}: {error}\n{hint}") from error
    return data_dir


def _load_with_tf_data(name: str, split: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    _quiet_tensorflow()
    try:
        arrays = tfds.as_numpy(tfds.load(name, split=split, data_dir=str(data_dir), batch_size=-1, download=False))
    except ImportError as error:
        raise DataUnavailableError(
            f"{name!r} in {data_dir} is prepared in TFRecord format, which needs tensorflow to read "
            "(pip install -e '.[data]'), or delete that folder to have it prepared again as array_record."
        ) from error
    images = np.asarray(arrays["image"], np.uint8)
    return (images[..., None] if images.ndim == 3 else images), np.asarray(arrays["label"], np.int32)


def load_image_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole TFDS image classification split into memory.

    MNIST is prepared on first use (see :func:`prepare_mnist`); other datasets (``cifar10``, ``svhn_cropped``
    ...) are prepared by TFDS itself, which needs the network.

    Args:
      name: the TFDS name, e.g. ``"mnist"``.
      split: e.g. ``"train"``, ``"test"``, ``"train[:10%]"``.
      data_dir: the TFDS data folder (default :func:`default_data_dir`).
      source_dir: MNIST only: a folder with the original files to prepare from offline.

    Returns:
      ``images`` uint8 ``[N, H, W, C]`` and ``labels`` int32 ``[N]``, in TFDS's (fixed) order.
    """
    import tensorflow_datasets as tfds

    _quiet_tensorflow()  # in case TFDS imports it below (preparing, or reading TFRecord files)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if name not in tfds.list_builders(with_community_datasets=False):  # the community list reads GCS through TF
        raise ValueError(
            f"Unknown dataset {name!r}: it is not a TFDS dataset (e.g. 'mnist', 'cifar10', 'svhn_cropped')."
        )
    try:
        source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
    except (tfds.core.registered.DatasetNotFoundError, NotImplementedError, AssertionError, FileNotFoundError):
        builder = tfds.builder(name, data_dir=str(data_dir))
        if builder.is_prepared():
            # Prepared earlier in TFRecord format (random access needs array_record): read it through tf.data.
            return _load_with_tf_data(name, split, data_dir)
        # Not prepared yet: prepare once (MNIST offline from its files; others through TFDS, online).
        if name == "mnist":
            prepare_mnist(data_dir=data_dir, source_dir=source_dir)
        else:
            try:
                _quiet_tensorflow()
                tfds.builder(name, data_dir=str(data_dir), file_format="array_record").download_and_prepare()
            except Exception as error:
                raise DataUnavailableError(
                    f"Could not prepare {name!r} in {data_dir}: {error}\nTFDS needs the network and tensorflow "
                    "(pip install -e '.[data]') to prepare it once."
                ) from error
        source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], np.int32)
    if images.ndim == 3:
        images = images[..., None]
    return images, labels
