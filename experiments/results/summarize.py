"""Prints the results table rows of experiments/README.md from the committed run summaries, then the mean and
standard deviation over seeds of every run that was repeated (files named ``<run>_seed<N>.json``), then the
paired comparisons among those: a network with SE blocks against the same network without (``se_<run>`` against
``<run>`` in the same folder) and naive attention learning against attention residual learning
(``<...>_nal_<...>`` against ``<...>_arl_<...>``), by Welch's unequal-variances t-test (the difference of the
means, t, its degrees of freedom and the two-sided p).

.venv/bin/python -m experiments.results.summarize
"""

from __future__ import annotations

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


def tables(root: Path = HERE) -> list[str]:
    """The markdown lines of the three tables, from the summaries in ``root``'s subfolders."""
    lines = [
        "| run | test error % | steps x batch | training wall-clock | train images/s | parameters |",
        "|---|---|---|---|---|---|",
    ]
    seeds: dict[str, list[tuple[int, float]]] = {}
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
        match = _SEED.match(path.stem)
        if match:
            seeds.setdefault(f"{path.parent.name}/{match.group(1)}", []).append((int(match.group(2)), error))
    errors = {name: [e for _, e in sorted(found)] for name, found in seeds.items()}
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


def main() -> None:
    print("\n".join(tables()))


if __name__ == "__main__":
    main()
