"""Prints the results table rows of experiments/README.md from the committed run summaries, then the mean and
standard deviation over seeds of every run that was repeated (files named ``<run>_seed<N>.json``).

.venv/bin/python -m experiments.results.summarize
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).parent
_SEED = re.compile(r"^(.*)_seed(\d+)$")


def main() -> None:
    print("| run | test error % | steps x batch | training wall-clock | train images/s | parameters |")
    print("|---|---|---|---|---|---|")
    seeds: dict[str, list[float]] = {}
    for path in sorted(HERE.glob("*/*.json")):
        summary = json.loads(path.read_text())
        if "final" not in summary:  # not a run summary (compare/speed.json: measured training speeds)
            continue
        config = summary["config"]
        minutes = summary["wall_seconds_this_run"] / 60
        rate = summary["train_images_per_second"]
        error = summary["final"]["error_percent"]
        print(
            f"| {path.parent.name}/{path.stem} | {error:.2f} | {summary['steps']} x {config['batch_size']} | "
            f"{minutes:.1f} min | {'-' if rate is None else f'{rate:.0f}'} | {summary['num_params']:,} |"
        )
        match = _SEED.match(path.stem)
        if match:
            seeds.setdefault(f"{path.parent.name}/{match.group(1)}", []).append(error)
    if seeds:
        print("\n| run | seeds | test error %, mean +- std | each seed |")
        print("|---|---|---|---|")
        for name, errors in seeds.items():
            mean = f"{statistics.mean(errors):.2f}"
            mean += f" +- {statistics.stdev(errors):.2f}" if len(errors) > 1 else " (one seed: no spread)"
            each = ", ".join(f"{e:.2f}" for e in errors)
            print(f"| {name} | {len(errors)} | {mean} | {each} |")


if __name__ == "__main__":
    main()
