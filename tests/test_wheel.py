"""The release artefacts: `python -m build` makes a wheel and an sdist, and the wheel installed into a fresh venv
with its core dependencies only (jax, numpy) runs the README's sampler example without a heavy import."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
HEAVY = ("flax", "optax", "tensorflow", "tensorflow_datasets", "matplotlib", "torch", "orbax", "chex", "scipy")

SAMPLER_EXAMPLE = f"""
import sys
import jax, jax.numpy as jnp
import visattn_jax as va

images = jnp.ones((8, 28, 28, 1))
theta = jnp.tile(jnp.array([[0.8, 0.1, 0.0], [-0.1, 0.8, 0.1]]), (8, 1, 1))
grid = jax.vmap(lambda t: va.affine_grid(t, (28, 28)))(theta)
out = va.grid_sample(images, grid)
assert out.shape == (8, 28, 28, 1), out.shape
identity = jax.vmap(lambda t: va.affine_grid(t, (28, 28)))(jnp.tile(jnp.eye(2, 3), (8, 1, 1)))
assert bool((va.grid_sample(images, identity) == images).all())
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
assert not heavy, f"heavy imports: {{heavy}}"
print("version", va.__version__, "from", va.__file__)
"""


def _version() -> str:
    namespace: dict = {}
    for line in (ROOT / "visattn_jax" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            exec(line, namespace)
    return namespace["__version__"]


@pytest.mark.slow
def test_wheel_installs_with_core_dependencies_and_runs_the_sampler(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], check=True, capture_output=True)
    version = _version()
    (wheel,) = dist.glob(f"visattn_jax-{version}-py3-none-any.whl")
    (sdist,) = dist.glob(f"visattn_jax-{version}.tar.gz")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"visattn_jax-{version}.dist-info/METADATA").decode()
    assert "visattn_jax/sampling.py" in names and "visattn_jax/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "experiments/", "notebooks/"))]
    requires = sorted(
        line.split()[1]
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert [r.split(">")[0] for r in requires] == ["jax", "numpy"], requires
    for field in (
        "Classifier: Topic :: Scientific/Engineering :: Image Processing",
        "Keywords:",
        "License-Expression: Apache-2.0",
    ):
        assert field in metadata, field
    with tarfile.open(sdist) as archive:
        members = {Path(m).relative_to(f"visattn_jax-{version}").as_posix() for m in archive.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "visattn_jax/__init__.py"} <= members

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
    )
    packages = {line.split("==")[0].lower() for line in installed.stdout.splitlines()}
    assert not packages & {"flax", "optax", "tensorflow", "matplotlib", "torch"}, packages
    run = subprocess.run([str(python), "-c", SAMPLER_EXAMPLE], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert f"version {version} from {venv}" in run.stdout, run.stdout
