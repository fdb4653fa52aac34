"""Prints the results table rows of experiments/README.md from the committed run summaries.

.venv/bin/python -m experiments.results.summarize
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    print("| run | test error % | steps x batch | training wall-clock | train images/s | parameters |")
    print("|---|---|---|---|---|---|")
    for path in sorted(HERE.glob("*/*.json")):
        summary = json.loads(path.read_text())
        config = summary["config"]
        minutes = summary["wall_seconds_this_run"] / 60
        print(
            f"| {path.parent.name}/{path.stem} | {summary['final']['error_percent']:.2f} | "
            f"{summary['steps']} x {config['batch_size']} | {minutes:.1f} min | "
            f"{summary['train_images_per_second']:.0f} | {summary['num_params']:,} |"
        )


if __name__ == "__main__":
    main()
