"""Opens the built documentation in a real headless browser (Chromium) and checks that pages render with their
content: the landing page and the ``grid_sample`` API page.

Usage: ``python docs/check_rendered.py docs/_build/html`` (after ``sphinx-build``). For each page it asks Chromium
for the DOM after loading (``--dump-dom``: scripts run, styles apply) and for a screenshot, then checks that the
DOM holds the page's expected text and that the screenshot shows a styled page (not a blank or unstyled one).
Screenshots are left in ``<html>/_screenshots/`` for a look. Exits non-zero with the reasons when a check fails,
or when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# page -> texts its rendered DOM must contain (the page's own content, the theme's navigation, the API text).
PAGES = {
    "index.html": [
        "The classic visual attention mechanisms in JAX",
        "Squeeze-and-Excitation",
        "Getting started",
        "API reference",
        "va.grid_sample(images, grid, mode=",
    ],
    "api/_generated/visattn_jax.grid_sample.html": [
        "visattn_jax.grid_sample",
        "torch.nn.functional.grid_sample",
        "padding_mode",
        "align_corners",
        "Parameters",
        "Returns",
        "[N, H, W, C]",
    ],
}
FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machines are offline: no update or sync connections
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1600",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("No Chromium found: install Debian's chromium package (apt-get install chromium).")


def _run(browser: str, profile: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def visible_text(dom: str) -> str:
    """The text of a DOM (tags dropped, entities decoded, whitespace collapsed): highlighted code is split into
    many spans, which the reader does not see."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", body)))


def distinct_colours(png: Path) -> int:
    """How many distinct colours the screenshot has (a blank page: 1; unstyled text: a handful)."""
    from PIL import Image

    with Image.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def check(html_dir: Path) -> list[str]:
    browser = find_chromium()
    shots = html_dir / "_screenshots"
    shots.mkdir(exist_ok=True)
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        for page, texts in PAGES.items():
            path = (html_dir / page).resolve()
            if not path.exists():
                problems.append(f"{page}: not built ({path} is missing)")
                continue
            dom = _run(browser, profile, "--dump-dom", path.as_uri())
            if dom.returncode != 0 or "<body" not in dom.stdout:
                problems.append(f"{page}: Chromium did not render it (exit {dom.returncode}): {dom.stderr[-500:]}")
                continue
            text = visible_text(dom.stdout)
            missing = [expected for expected in texts if expected not in text]
            if missing:
                problems.append(f"{page}: the rendered page lacks {missing}")
            png = shots / (Path(page).stem + ".png")
            _run(browser, profile, f"--screenshot={png}", path.as_uri())
            colours = distinct_colours(png) if png.exists() else 0
            if colours < 16:
                problems.append(f"{page}: the screenshot has {colours} colours: blank or unstyled")
            print(
                f"{page}: {len(dom.stdout):,} characters of DOM, all {len(texts)} texts present"
                if not missing
                else f"{page}: missing {missing}",
                f"; screenshot {png} ({colours} colours)",
            )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", type=Path, nargs="?", default=Path(__file__).parent / "_build" / "html")
    problems = check(parser.parse_args().html_dir)
    if problems:
        sys.exit("Rendering check failed:\n  " + "\n  ".join(problems))
    print("Rendering check passed.")


if __name__ == "__main__":
    main()
