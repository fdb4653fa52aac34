"""The examples users read run: every ``>>>`` example in the README, the documentation pages and the docstrings
is a doctest, and every Python code block of the README and the docs is written as one (so none goes untested)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import visattn_jax

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "api").glob("*.md"))]
MODULES = ["visattn_jax"] + [m.name for m in pkgutil.walk_packages(visattn_jax.__path__, "visattn_jax.")]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PYTHON_BLOCK = re.compile(r"^```(?:python|pycon|py)\n(.*?)^```", re.MULTILINE | re.DOTALL)


# docs/nnx.md trains an SE-ResNet-20 step from NNX (a minute on 2 cores): the slow tier; tests/test_nnx_bridge.py
# checks the same calls in the default tier.
SLOW_PAGES = {"nnx.md"}


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_PAGES else p for p in PAGES],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_page_examples_run(page):
    result = doctest.testfile(str(page), module_relative=False, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page.name} (see above)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_is_a_doctest(page):
    untested = [block[:60] for block in PYTHON_BLOCK.findall(page.read_text()) if ">>> " not in block]
    assert not untested, f"Python blocks without '>>>' in {page.name} would not run: {untested}"


def test_the_pages_hold_examples():
    counts = {page.name: len(doctest.DocTestParser().get_examples(page.read_text())) for page in PAGES}
    assert counts["README.md"] >= 5 and counts["getting_started.md"] >= 30 and counts["nnx.md"] >= 5, counts


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, name):  # each docstring sees its module's globals, as `python -m doctest`
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring examples failed in {name}"
