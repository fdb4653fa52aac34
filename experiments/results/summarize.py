"""Prints the results table rows of experiments/README.md from the committed run summaries, then the mean and
standard deviation over seeds of every run that was repeated (files named ``<run>_seed<N>.json``), then the
paired comparisons among those: a network with SE blocks against the same network without (``se_<run>`` against
``<run>`` in the same folder) and naive attention learning against attention residual learning
(``<...>_nal_<...>`` against ``<...>_arl_<...>``), by Welch's unequal-variances t-test (the difference of the
means, t, its degrees of freedom and the two-sided p). ``--figures`` also draws, for every such pair whose
summaries hold their evaluation histories, each seed's test error against epochs, both networks on one axis
(``<folder>/<run>_seeds.png``).

.venv/bin/python -m experiments.results.summarize [--figures]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

from experiments.compare_report import welch

HERE = Path(__file__).parent
_SEED = re.compile(r"^(.*)_seed(\d+)$")


def counterpart(name: str) -> str | None:
    """The seeded run ``name`` (``folder/run``) is compared against: ``folder/X`` for ``folder/se_X``,
    ``folder/..._arl_...`` for ``folder/..._nal_...``; None for any other run."""
    folder, run = name.split("/", 1)
    if run.startswith("se_"):
        return f"{folder}/{run.removeprefix('se_')}"
    if "_nal_" in run:
        return f"{folder}/{run.replace('_nal_', '_arl_', 1)}"
    return None


def _seeded(root: Path) -> dict[str, list[dict]]:
    """``folder/run`` -> the summaries of its seeds (files ``<run>_seed<N>.json``), in seed order."""
    found: dict[str, list[tuple[int, dict]]] = {}
    for path in sorted(root.glob("*/*_seed*.json")):
        match = _SEED.match(path.stem)
        summary = json.loads(path.read_text())
        if match and "final" in summary:
            found.setdefault(f"{path.parent.name}/{match.group(1)}", []).append((int(match.group(2)), summary))
    return {name: [s for _, s in sorted(runs, key=lambda r: r[0])] for name, runs in found.items()}


def tables(root: Path = HERE) -> list[str]:
    """The markdown lines of the three tables, from the summaries in ``root``'s subfolders."""
    lines = [
        "| run | test error % | steps x batch | training wall-clock | train images/s | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(root.glob("*/*.json")):
        summary = json.loads(path.read_text())
        if "final" not in summary:  # not a run summary (compare/speed.json: measured training speeds)
            continue
        config = summary["config"]
        minutes = summary["wall_seconds_this_run"] / 60
        rate = summary["train_images_per_second"]
        error = summary["final"]["error_percent"]
        lines.append(
            f"| {path.parent.name}/{path.stem} | {error:.2f} | {summary['steps']} x {config['batch_size']} | "
            f"{minutes:.1f} min | {'-' if rate is None else f'{rate:.0f}'} | {summary['num_params']:,} |"
        )
    errors = {name: [s["final"]["error_percent"] for s in runs] for name, runs in _seeded(root).items()}
    if errors:
        lines += ["", "| run | seeds | test error %, mean +- std | each seed |", "|---|---|---|---|"]
        for name, values in errors.items():
            mean = f"{statistics.mean(values):.2f}"
            mean += f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else " (one seed: no spread)"
            each = ", ".join(f"{e:.2f}" for e in values)
            lines.append(f"| {name} | {len(values)} | {mean} | {each} |")
    pairs = [(name, other) for name in errors if (other := counterpart(name)) in errors]
    if pairs:
        lines += [
            "",
            "| run | against | seeds | difference of the means | Welch's t (degrees of freedom), two-sided p |",
            "|---|---|---|---|---|",
        ]
        for name, other in pairs:
            test = welch(errors[name], errors[other])
            if math.isnan(test.t):
                t_text = "n/a (fewer than 2 seeds a side, or no spread)"
            else:
                t_text = f"{test.t:+.2f} ({test.df:.1f}), p = {test.p:.2f}"
            counts = f"{len(errors[name])} / {len(errors[other])}"
            lines.append(f"| {name} | {other} | {counts} | {test.difference:+.2f} | {t_text} |")
    return lines


def curve(summary: dict) -> tuple[list[float], list[float]]:
    """The test error % after every evaluation of one run (its ``history``, then its final evaluation, once),
    against epochs when the summary has ``steps_per_epoch``, else against steps."""
    per_epoch = summary.get("steps_per_epoch") or 1
    points = [(h["step"], h["error_percent"]) for h in summary.get("history", [])]
    if not points or points[-1][0] != summary["steps"]:
        points.append((summary["steps"], summary["final"]["error_percent"]))
    return [step / per_epoch for step, _ in points], [error for _, error in points]


def figures(root: Path = HERE) -> list[Path]:
    """For every pair of the comparison table (see :func:`counterpart`) whose runs were all evaluated before their
    end too (a non-empty ``history``): each seed's test error against epochs, both networks on one axis, written to
    ``root/<folder>/<run>_seeds.png``; returns the paths written."""
    from visattn_jax.viz import plot_seed_curves

    seeded = _seeded(root)
    written = []
    for name, runs in seeded.items():
        other = counterpart(name)
        if other not in seeded or not all(s.get("history") for s in runs + seeded[other]):
            continue  # no pair, or a run evaluated only at its end: no curve to draw
        curves = {}
        for run in (other, name):
            finals = [s["final"]["error_percent"] for s in seeded[run]]
            spread = f" +- {statistics.stdev(finals):.2f}" if len(finals) > 1 else ""
            count = f"{len(finals)} seed{'s' * (len(finals) > 1)}"
            curves[f"{run.split('/', 1)[1]}: {statistics.mean(finals):.2f}{spread} ({count})"] = [
                curve(s) for s in seeded[run]
            ]
        folder, run = name.split("/", 1)
        title = f"{folder}: test error of each seed (legend: the final mean +- std)"
        written.append(plot_seed_curves(curves, root / folder / f"{run}_seeds.png", title=title))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", action="store_true", help="also draw each compared pair's seeds' test error")
    args = parser.parse_args(argv)
    print("\n".join(tables()))
    if args.figures:
        for path in figures():
            print(f"Wrote {path}")


if __name__ == "__main__":
    main()
