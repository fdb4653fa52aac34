"""Score-function (REINFORCE) estimators with a learned baseline: pure losses, usable with any policy.

For a policy ``pi_phi(a)`` and a reward ``R(a)``, ``grad_phi E[R] = E[grad_phi log pi_phi(a) (R - b)]`` for any
baseline ``b`` that does not depend on ``a`` (Williams 1992; RAM, Mnih et al. 2014, section 3.2). The
surrogate ``-mean(log pi(a) * stop_gradient(R - b))`` has exactly that gradient; the sample ``a`` must be
``stop_gradient``-ed where it was drawn (so no path-wise gradient leaks through it) and the baseline is fitted
by its own squared error to the reward.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["baseline_loss", "gaussian_log_prob", "reinforce_loss"]


def gaussian_log_prob(sample: ArrayLike, mean: ArrayLike, std: float | ArrayLike) -> jax.Array:
    """Log-density of a diagonal Gaussian, summed over the last axis: ``[..., D] -> [...]``."""
    sample, mean = jnp.asarray(sample), jnp.asarray(mean)
    std = jnp.asarray(std, mean.dtype)
    z = (sample - mean) / std
    return jnp.sum(-0.5 * z * z - jnp.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


def reinforce_loss(log_probs: ArrayLike, rewards: ArrayLike, baselines: ArrayLike | None = None) -> jax.Array:
    """The REINFORCE surrogate ``-mean_n sum_t log_probs[n, t] * stop_gradient(rewards[n] - baselines[n, t])``.

    Args:
      log_probs: ``[N, T]`` log-probabilities of the actions taken (differentiable in the policy's
        parameters; the actions themselves must carry no gradient).
      rewards: ``[N]`` episode returns (treated as constants).
      baselines: ``[N, T]`` baseline estimates (treated as constants here; train them with
        :func:`baseline_loss`), or None for no baseline.

    Returns:
      Scalar surrogate loss whose gradient is the negated score-function estimate of ``grad E[R]``.
    """
    log_probs = jnp.asarray(log_probs)
    rewards = jnp.asarray(rewards, log_probs.dtype)
    if log_probs.ndim != 2 or rewards.shape != log_probs.shape[:1]:
        raise ValueError(f"log_probs must be [N, T] and rewards [N], got {log_probs.shape} and {rewards.shape}.")
    advantage = rewards[:, None] * jnp.ones_like(log_probs)
    if baselines is not None:
        baselines = jnp.asarray(baselines, log_probs.dtype)
        if baselines.shape != log_probs.shape:
            raise ValueError(f"baselines must match log_probs {log_probs.shape}, got {baselines.shape}.")
        advantage = advantage - baselines
    return -jnp.mean(jnp.sum(log_probs * jax.lax.stop_gradient(advantage), axis=-1))


def baseline_loss(baselines: ArrayLike, rewards: ArrayLike) -> jax.Array:
    """Squared error of the baselines ``[N, T]`` to the rewards ``[N]`` (rewards are constants): a scalar."""
    baselines = jnp.asarray(baselines)
    rewards = jax.lax.stop_gradient(jnp.asarray(rewards, baselines.dtype))
    return jnp.mean((baselines - rewards[:, None]) ** 2)
