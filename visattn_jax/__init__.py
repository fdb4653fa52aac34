"""visattn_jax: visual attention mechanisms (spatial, channel, mixed, recurrent) in JAX and Flax Linen."""

from visattn_jax.grids import (
    affine_grid,
    attention_grid,
    attention_to_affine,
    base_coords,
    base_grid,
    displacement_grid,
    pixels_to_normalized,
    projective_grid,
    tps_control_points,
    tps_grid,
)
from visattn_jax.sampling import (
    INTERPOLATION_MODES,
    InterpolationMode,
    PaddingMode,
    apply_interpolation,
    apply_taps,
    bilinear_sample,
    grid_push,
    grid_sample,
    interpolation_matrix,
    interpolation_taps,
    sample,
    separable_sample,
    taps_to_matrix,
)

__version__ = "0.1.0"  # the one source of the version: pyproject.toml reads it, CHANGELOG.md describes it

__all__ = [
    "INTERPOLATION_MODES",
    "InterpolationMode",
    "PaddingMode",
    "affine_grid",
    "apply_interpolation",
    "apply_taps",
    "attention_grid",
    "attention_to_affine",
    "base_coords",
    "base_grid",
    "bilinear_sample",
    "displacement_grid",
    "grid_push",
    "grid_sample",
    "interpolation_matrix",
    "interpolation_taps",
    "pixels_to_normalized",
    "projective_grid",
    "sample",
    "separable_sample",
    "taps_to_matrix",
    "tps_control_points",
    "tps_grid",
]
