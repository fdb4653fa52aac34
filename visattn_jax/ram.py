"""Recurrent Models of Visual Attention (RAM, Mnih, Heess, Graves, Kavukcuoglu, NIPS 2014) in Flax Linen.

One episode (a ``lax.scan`` over glimpses, via ``nn.scan``):

    g_t  = glimpse_net(glimpse_sensor(x, l_t), l_t)           (retina + "what" and "where")
    h_t  = core(h_{t-1}, g_t)                                 (ReLU RNN, or LSTM)
    mu_t = tanh(W_l stop_gradient(h_t));  l_{t+1} ~ N(mu_t, std^2), clipped to [-1, 1] (see below)
    b_t  = W_b stop_gradient(h_t)                             (baseline)
    logits = action_net(h_T)                                  (classification at the last step)

Gradient flow (the paper's hybrid loss): cross-entropy trains the action, core and glimpse networks; the
location network gets only the REINFORCE gradient (its input ``h_t`` is ``stop_gradient``-ed and the sampled
location carries no gradient); the baseline network gets only its squared error. ``tests/test_ram.py`` checks
each path.

Location clipping (our choice, as in most ports): the sample is drawn from the unclipped Gaussian and its
log-probability is that of the unclipped sample; the sensor then looks at the sample clipped to ``[-1, 1]``.
The policy is thus an exact Gaussian and the estimator unbiased for it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from visattn_jax.backend import resolve_backend
from visattn_jax.grids import base_coords
from visattn_jax.reinforce import baseline_loss, gaussian_log_prob, reinforce_loss
from visattn_jax.sampling import apply_interpolation, apply_taps, interpolation_taps, taps_to_matrix

__all__ = [
    "RAM",
    "ConvBaseline",
    "GlimpseNetwork",
    "glimpse_boxes",
    "glimpse_sensor",
    "ram_loss",
]


def _retina_taps(
    centre: jax.Array, size: int, scale: int, pixels: int, antialias: bool, num_taps: int
) -> tuple[jax.Array, jax.Array]:
    """Taps ``([size, num_taps], [size, num_taps])`` reading one axis across a patch ``size * scale`` wide."""
    half_width = size * scale / pixels  # normalised half-width of the patch (2 / pixels per pixel)
    if antialias and scale > 1:
        # Area averaging: read ``scale`` sub-samples under each output cell and average them.
        indices, weights = interpolation_taps(centre + jnp.asarray(base_coords(size * scale)) * half_width, pixels)
        indices, weights = indices.reshape(size, 2 * scale), weights.reshape(size, 2 * scale) / scale
    else:
        indices, weights = interpolation_taps(centre + jnp.asarray(base_coords(size)) * half_width, pixels)
    pad = ((0, 0), (0, num_taps - indices.shape[1]))  # zero-weight taps: every scale gets the same shape
    return jnp.pad(indices, pad), jnp.pad(weights, pad)


#: The retina's formulations; ``"auto"`` is :func:`resolve_sensor_method`'s choice for the backend.
SENSOR_METHODS = ("auto", "gather", "matmul")


def resolve_sensor_method(method: str, *, backend: str | None = None) -> str:
    """``"gather"`` or ``"matmul"`` for ``method``: ``"auto"`` is ``"matmul"`` on TPU and ``"gather"`` elsewhere
    (``backend``: the platform the retina is compiled for, default :func:`visattn_jax.backend.resolve_backend`).

    Why (``python -m experiments.tpu_sampler``, v5e, batch 256 over 4 chips, docs/tpu.md): XLA's TPU
    cost model charges the gather retina 236 MB of memory traffic per chip for one cluttered-60 glimpse of its
    64 images (3 scales of 12x12) and the matmul retina 30 MB (forward; with the gradient 320 against 61 MB),
    for 21 MFLOP of matmuls that a TPU's matrix unit does in about a microsecond at its peak rate. On CPUs the
    gathers read only the pixels they need and are the faster form (experiments/README.md, RAM throughput)."""
    if method not in SENSOR_METHODS:
        raise ValueError(f"method must be one of {list(SENSOR_METHODS)}, got {method!r}.")
    if method != "auto":
        return method
    return "matmul" if resolve_backend(backend) == "tpu" else "gather"


def glimpse_sensor(
    image: ArrayLike,
    location: ArrayLike,
    *,
    size: int,
    num_scales: int,
    antialias: bool = False,
    method: str = "auto",
) -> jax.Array:
    """The RAM retina: ``num_scales`` square patches centred at ``location``, each read at ``size x size``.

    Patch ``k`` is ``size * 2^k`` pixels wide, centred at ``location`` (normalised ``(x, y)`` in ``[-1, 1]^2``,
    ``(0, 0)`` the centre, ``(-1, -1)`` the top-left corner), and resampled to ``size x size``: bilinearly at
    the cell centres, or with ``antialias=True`` by averaging ``2^k`` bilinear sub-samples per cell and axis
    (no aliasing on the coarse scales). Outside the image reads zero. Separable: each scale is a row pass and a
    column pass over sparse interpolation taps (:func:`visattn_jax.sampling.apply_taps`, reads only the pixels
    the taps name: fastest on CPU and GPU), or over the equivalent dense matrices (``method="matmul"``, two
    small matmuls per scale: for matrix units such as TPUs'); ``"auto"`` (the default) picks the matmuls on TPU
    and the gathers elsewhere (:func:`resolve_sensor_method`).

    Args:
      image: ``[H, W, C]``.
      location: ``[2]``.
      size: ``g``, the side of every patch after resampling.
      num_scales: ``k``, the number of patches.
      antialias: area-average the coarse scales.
      method: ``"auto"``, ``"gather"`` or ``"matmul"``; the same numbers up to float rounding.

    Returns:
      ``[num_scales, size, size, C]``.
    """
    image = jnp.asarray(image)
    location = jnp.asarray(location)
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}.")
    if location.shape != (2,):
        raise ValueError(f"location must be [2] (x, y) (vmap for a batch), got shape {location.shape}.")
    if size < 1 or num_scales < 1:
        raise ValueError(f"size and num_scales must be positive, got {size} and {num_scales}.")
    method = resolve_sensor_method(method)
    height, width = image.shape[:2]
    num_taps = 2**num_scales if antialias else 2
    scales = [2**k for k in range(num_scales)]

    def stack(taps):  # k x (indices, weights) -> (indices [k, size, taps], weights [k, size, taps])
        return tuple(jnp.stack(part) for part in zip(*taps, strict=True))

    rows = stack([_retina_taps(location[1], size, s, height, antialias, num_taps) for s in scales])
    cols = stack([_retina_taps(location[0], size, s, width, antialias, num_taps) for s in scales])
    if method == "matmul":
        dense = lambda taps, pixels: jax.vmap(taps_to_matrix, in_axes=(0, 0, None))(*taps, pixels)  # noqa: E731
        return jax.vmap(apply_interpolation, in_axes=(None, 0, 0))(image, dense(rows, height), dense(cols, width))
    return jax.vmap(apply_taps, in_axes=(None, 0, 0))(image, rows, cols)


class GlimpseNetwork(nn.Module):
    """``g = ReLU(Linear(h_g) + Linear(h_l))`` with ``h_g = ReLU(Linear(patches))``, ``h_l = ReLU(Linear(l))``."""

    hidden_glimpse: int = 128
    hidden_location: int = 128
    features: int = 256

    @nn.compact
    def __call__(self, patches: jax.Array, location: jax.Array) -> jax.Array:
        h_g = nn.relu(nn.Dense(self.hidden_glimpse, name="what")(patches.reshape(patches.shape[0], -1)))
        h_l = nn.relu(nn.Dense(self.hidden_location, name="where")(location))
        return nn.relu(nn.Dense(self.features, name="what_out")(h_g) + nn.Dense(self.features, name="where_out")(h_l))


class _Step(nn.Module):
    """One glimpse of the episode (scanned over time)."""

    size: int
    num_scales: int
    antialias: bool
    hidden: int
    core: str
    location_std: float
    random_locations: bool
    sensor_method: str

    @nn.compact
    def __call__(self, carry, noise):
        images, state, location = carry
        patches = jax.vmap(
            lambda im, loc: glimpse_sensor(
                im, loc, size=self.size, num_scales=self.num_scales, antialias=self.antialias, method=self.sensor_method
            )
        )(images, location)
        g = GlimpseNetwork(features=self.hidden, name="glimpse")(patches, location)
        if self.core == "lstm":
            state, h = nn.OptimizedLSTMCell(self.hidden, name="core")(state, g)
        else:
            h = nn.relu(nn.Dense(self.hidden, name="core_h")(state) + nn.Dense(self.hidden, name="core_g")(g))
            state = h
        # The location and baseline nets see h without passing gradients back into the core.
        h_fixed = jax.lax.stop_gradient(h)
        mean = jnp.tanh(nn.Dense(2, name="location")(h_fixed))
        baseline = nn.Dense(1, name="baseline")(h_fixed)[:, 0]
        if self.random_locations:  # the "random glimpses" baseline: uniform locations, no policy
            sample = noise["uniform"]
            log_prob = jnp.zeros(sample.shape[:1], mean.dtype)
        else:
            sample = jax.lax.stop_gradient(mean + self.location_std * noise["normal"])
            log_prob = gaussian_log_prob(sample, mean, self.location_std)
        next_location = jnp.clip(sample, -1.0, 1.0)
        return (images, state, next_location), {
            "h": h,
            "log_prob": log_prob,
            "baseline": baseline,
            "location": location,
            "mean": mean,
        }


class RAM(nn.Module):
    """The recurrent attention model for classification.

    Attributes:
      num_classes: classes of the action network.
      num_glimpses: ``T``, glimpses per episode.
      glimpse_size: ``g``; num_scales: ``k``; antialias: see :func:`glimpse_sensor`.
      hidden: width of the glimpse feature and the core state (256 in the paper).
      core: ``"rnn"`` (the paper's ReLU RNN) or ``"lstm"``.
      location_std: the fixed std of the Gaussian location policy.
      random_locations: glimpse at uniformly random places (the paper's "random glimpses" baseline).
      sensor_method: the retina's ``method`` (:func:`glimpse_sensor`): ``"auto"`` (matmuls on TPU, gathers
        elsewhere), ``"gather"`` or ``"matmul"``.

    ``__call__(images [N, H, W, C], key)`` returns a dict: ``logits [N, classes]``, ``log_probs [N, T - 1]``
    and ``baselines [N, T - 1]`` for the locations the episode used after the first, ``locations [N, T, 2]``
    (where each glimpse looked; the first is uniform at random), ``means [N, T, 2]``.
    """

    num_classes: int = 10
    num_glimpses: int = 6
    glimpse_size: int = 8
    num_scales: int = 1
    antialias: bool = False
    hidden: int = 256
    core: str = "rnn"
    location_std: float = 0.15
    random_locations: bool = False
    sensor_method: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        if images.ndim != 4:
            raise ValueError(f"RAM expects [N, H, W, C] images, got shape {images.shape}.")
        if self.core not in ("rnn", "lstm"):
            raise ValueError(f"core must be 'rnn' or 'lstm', got {self.core!r}.")
        if self.num_glimpses < 1:
            raise ValueError(f"num_glimpses must be at least 1, got {self.num_glimpses}.")
        n, t = images.shape[0], self.num_glimpses
        k_start, k_normal, k_uniform = jax.random.split(key, 3)
        start = jax.random.uniform(k_start, (n, 2), minval=-1.0, maxval=1.0)
        noise = {
            "normal": jax.random.normal(k_normal, (t, n, 2)),
            "uniform": jax.random.uniform(k_uniform, (t, n, 2), minval=-1.0, maxval=1.0),
        }
        if self.core == "lstm":
            state = nn.OptimizedLSTMCell(self.hidden, parent=None).initialize_carry(key, (n, self.hidden))
        else:
            state = jnp.zeros((n, self.hidden), images.dtype)
        scan = nn.scan(_Step, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0)
        step = scan(
            self.glimpse_size,
            self.num_scales,
            self.antialias,
            self.hidden,
            self.core,
            self.location_std,
            self.random_locations,
            self.sensor_method,
            name="step",
        )
        _, outputs = step((images, state, start), noise)
        logits = nn.Dense(self.num_classes, name="action")(outputs["h"][-1])
        time_major = lambda x: jnp.moveaxis(x, 0, 1)  # noqa: E731
        # Step t's sample is the location of glimpse t + 1; the last step's sample is never used.
        return {
            "logits": logits,
            "log_probs": time_major(outputs["log_prob"][:-1]),
            "baselines": time_major(outputs["baseline"][:-1]),
            "locations": time_major(outputs["location"]),
            "means": time_major(outputs["mean"]),
        }


def ram_loss(outputs: dict[str, jax.Array], labels: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The hybrid loss: cross-entropy + REINFORCE (reward 1 if correct) + baseline squared error.

    Args:
      outputs: the dict returned by :meth:`RAM.__call__`.
      labels: ``[N]`` int class labels.

    Returns:
      ``(loss, metrics)``, metrics with the reward, baseline error and policy statistics.
    """
    logits = outputs["logits"]
    labels = jnp.asarray(labels)
    if labels.shape != logits.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integer classes of shape [N] = {list(logits.shape[:1])} (one per image), got "
            f"{labels.dtype} {list(labels.shape)}"
            + ("; one-hot labels: argmax them first." if labels.ndim == 2 else ".")
        )
    log_softmax = jax.nn.log_softmax(logits)
    cross_entropy = -jnp.mean(jnp.take_along_axis(log_softmax, labels[:, None], axis=1))
    reward = (jnp.argmax(logits, -1) == labels).astype(logits.dtype)
    loss = cross_entropy
    metrics = {"cross_entropy": cross_entropy, "reward": jnp.mean(reward), "accuracy": jnp.mean(reward)}
    if outputs["log_probs"].shape[1] > 0:
        policy = reinforce_loss(outputs["log_probs"], reward, outputs["baselines"])
        fit = baseline_loss(outputs["baselines"], reward)
        loss = loss + policy + fit
        metrics |= {
            "reinforce": policy,
            "baseline_mse": fit,
            "advantage_abs": jnp.mean(jnp.abs(reward[:, None] - outputs["baselines"])),
            "location_mean_abs": jnp.mean(jnp.abs(outputs["means"])),
        }
    return loss, metrics


class ConvBaseline(nn.Module):
    """Convolutional baselines for the RAM tasks: ReLU convs -> FC -> logits.

    The defaults are ours (two 5x5 stride-2 "SAME" convs of 32 and 64 filters, FC 256: 3.7M parameters on
    60x60). ``ConvBaseline.paper()`` is the paper's baseline as we read its text (one "VALID" conv layer of 8
    10x10 filters with stride 5, then FC 256: the "2 layers" of its tables; 0.25M parameters on 60x60, like
    RAM). PAPERS.md gives only "conv 2 layers", so the paper's widths are our reading, not a quotation.
    """

    num_classes: int = 10
    filters: tuple[int, ...] = (32, 64)
    kernel: int = 5
    stride: int = 2
    padding: str = "SAME"
    hidden: int = 256

    @classmethod
    def paper(cls, num_classes: int = 10) -> ConvBaseline:
        return cls(num_classes=num_classes, filters=(8,), kernel=10, stride=5, padding="VALID", hidden=256)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.filters:
            conv = nn.Conv(width, (self.kernel, self.kernel), strides=(self.stride, self.stride), padding=self.padding)
            x = nn.relu(conv(x))
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)


def glimpse_boxes(locations: np.ndarray, *, size: int, num_scales: int, height: int, width: int) -> np.ndarray:
    """Pixel boxes ``[..., num_scales, 4]`` (left, top, right, bottom) of the patches at ``locations [..., 2]``."""
    locations = np.asarray(locations, np.float64)
    cx = (locations[..., 0] + 1) * width / 2 - 0.5
    cy = (locations[..., 1] + 1) * height / 2 - 0.5
    half = size * 2.0 ** np.arange(num_scales) / 2
    return np.stack([cx[..., None] - half, cy[..., None] - half, cx[..., None] + half, cy[..., None] + half], -1)
