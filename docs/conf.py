"""Sphinx configuration of the visattn_jax documentation (docs/; build: `sphinx-build -W docs docs/_build/html`).

Stack: Sphinx with MyST markdown (pages stay readable as plain markdown on a repository page) and myst-nb (the
notebooks rendered from their saved outputs, never re-executed: they train for minutes), autodoc + autosummary
(one page per public name, from the docstrings, Google style through napoleon) and the Furo theme. The build
fails when a name in a public ``__all__`` has no page (:func:`check_every_public_name_has_a_page`), as dm-pix's
API check does.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # `experiments` for the pages that import it; visattn_jax is installed
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # libtpu, where installed, stays quiet
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")

import visattn_jax  # noqa: E402

project = "visattn_jax"
author = "The visattn_jax authors"
copyright = "2026, The visattn_jax authors"  # noqa: A001
version = release = visattn_jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
# .rst first: autosummary writes its generated pages (rst templates) with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]

# MyST: $...$ maths, ::: fences, heading anchors for links such as conventions.md#padding.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
# The notebooks are committed executed (on real data, minutes of training each): render their saved outputs.
nb_execution_mode = "off"

autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__, parent, name"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" sections as fields: dataclass fields are not documented twice
# Docstrings quote shapes as ``[N, H, W, C]``; keep jaxtyping / jax aliases short in signatures.
autodoc_type_aliases = {"ArrayLike": "ArrayLike"}

html_theme = "furo"
html_title = f"visattn_jax {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# The notebooks live in notebooks/ (where users open them); Sphinx reads sources under docs/ only, so each build
# copies them into docs/notebooks/ (git-ignored).
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_COPIES = DOCS / "notebooks"


def copy_notebooks(app) -> None:
    NOTEBOOK_COPIES.mkdir(exist_ok=True)
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        target = NOTEBOOK_COPIES / path.name
        if not target.exists() or target.read_bytes() != path.read_bytes():
            shutil.copyfile(path, target)


def public_modules() -> list[str]:
    """visattn_jax and every submodule that declares ``__all__`` (its public API)."""
    names = ["visattn_jax"] + [m.name for m in pkgutil.walk_packages(visattn_jax.__path__, "visattn_jax.")]
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


def _resolve(fullname: str):
    """The object a documented dotted name refers to (None if it does not import)."""
    parts = fullname.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def missing_pages(documented: set[str]) -> list[str]:
    """Every ``module.name`` of a public ``__all__`` that no page documents, under that name or as the same
    object re-exported elsewhere (``visattn_jax.grid_sample`` documents ``visattn_jax.sampling.grid_sample``)."""
    documented_ids = {id(obj) for name in documented if (obj := _resolve(name)) is not None}
    missing = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not hasattr(module, name):
                missing.append(f"{module_name}.{name} (listed in __all__ but not defined)")
            elif f"{module_name}.{name}" not in documented and id(getattr(module, name)) not in documented_ids:
                missing.append(f"{module_name}.{name}")
    return missing


def check_every_public_name_has_a_page(app, env) -> None:
    documented = set(env.get_domain("py").objects)
    if missing := missing_pages(documented):
        from sphinx.errors import ExtensionError

        raise ExtensionError(
            f"{len(missing)} public name(s) have no API page; add them to a page under docs/api/: " + ", ".join(missing)
        )


def setup(app):
    app.connect("builder-inited", copy_notebooks)
    app.connect("env-check-consistency", check_every_public_name_has_a_page)
    return {"parallel_read_safe": True}
