"""The cross-family comparison's tables and figures, from the runs of ``bash experiments/run_table.sh compare``.

Reads the run summaries in experiments/results/compare/ (``<dataset>_<model>_seed<N>.json``) and prints, per
dataset, one markdown table: test error mean +- standard deviation over the seeds (and each seed), the
difference from the dataset's plain baseline with Welch's t, parameters, multiply-adds of one image (the papers'
convention, :func:`visattn_jax.models.multiply_adds`) and training images/s (``--speed``: every model measured
again back to back in one process, so the rates compare; else the runs' own, which depend on what shared the
cores). Writes the tables to experiments/results/compare/tables.md and, for every dataset whose seed-0 runs are
still in ``runs/compare/``, the figure of what each network attends to on the same six test images
(``experiments/results/compare/<dataset>_attention.png``: sampling grids, glimpse paths, masks, excitations).

  .venv/bin/python -m experiments.compare_report [--speed] [--datasets=cluttered60,cifar10] [--runs=runs/compare]
      [--out=experiments/results/compare]

``--datasets`` limits the speed measurement and the figures to those datasets (the tables are always written for
every dataset with summaries, reading the others' speeds from speed.json): a dataset's rows compare with each
other, so its models are measured together, and another dataset's figure and speeds stay as they were.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path
from typing import NamedTuple

from scipy import stats

from experiments.configs import compare

_REPOSITORY = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"^(?P<dataset>[a-z0-9]+)_(?P<model>[a-z0-9_]+)_seed(?P<seed>\d+)$")
BASELINES = {"cluttered60": "cnn", "cifar10": "resnet20"}
NUM_IMAGES = 6


class Welch(NamedTuple):
    """Welch's unequal-variances t-test of ``mean(a) - mean(b)``: the difference of the means, t, the
    Welch-Satterthwaite degrees of freedom and the two-sided p-value (nan where a side has fewer than 2 values or
    neither has spread)."""

    difference: float
    t: float
    df: float
    p: float


def welch(a: list[float], b: list[float]) -> Welch:
    """:class:`Welch` of ``a`` against ``b`` (scipy's ``ttest_ind(equal_var=False)``)."""
    difference = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2 or statistics.variance(a) + statistics.variance(b) == 0:
        return Welch(difference, math.nan, math.nan, math.nan)
    result = stats.ttest_ind(a, b, equal_var=False)
    return Welch(difference, float(result.statistic), float(result.df), float(result.pvalue))


def read_summaries(folder: Path) -> dict[str, dict[str, list[dict]]]:
    """``{dataset: {model: [summary per seed, in seed order]}}`` from ``folder``'s ``*_seed<N>.json``."""
    found: dict[str, dict[str, list[tuple[int, dict]]]] = {}
    for path in sorted(folder.glob("*_seed*.json")):
        match = _NAME.match(path.stem)
        if match is None or match["model"] not in compare.MODELS.get(match["dataset"], {}):
            continue
        runs = found.setdefault(match["dataset"], {}).setdefault(match["model"], [])
        runs.append((int(match["seed"]), json.loads(path.read_text())))
    return {d: {m: [s for _, s in sorted(runs)] for m, runs in models.items()} for d, models in found.items()}


def model_cost(dataset: str, model: str) -> tuple[int, float]:
    """Parameters and multiply-adds of one image of ``model`` as the comparison builds it (nothing allocated)."""
    import jax
    import jax.numpy as jnp

    from visattn_jax.data import input_shape
    from visattn_jax.models import multiply_adds, num_params
    from visattn_jax.objectives import eval_kwargs, takes_argument
    from visattn_jax.train.experiment import build_model

    config = compare.get_config(f"{dataset},{model}")
    shape = input_shape(config)
    network, _ = build_model(config, shape)
    images = jnp.zeros((1, *shape))
    args = (jax.random.PRNGKey(0),) if takes_argument(network, "key") else ()
    variables = jax.eval_shape(lambda: network.init(jax.random.PRNGKey(0), images, *args, **eval_kwargs(network)))
    return num_params(variables), multiply_adds(network, (1, *shape), variables)["macs"]


def measure_speed(dataset: str, model: str, folder: Path, *, steps: int = 40) -> float:
    """Training images/s of ``model`` on ``dataset`` at its comparison config (batch, compile options), from a
    short run of ``steps`` steps in ``folder`` (the first step, which compiles, is not timed); the test set is
    cut to 256 images and not the point."""
    from visattn_jax import train

    config = compare.get_config(f"{dataset},{model}")
    if "num_epochs" in config:
        config.num_epochs = 0.0
        config.decay_epochs = ()
        config.warmup_epochs = 0.0
    config.update(num_steps=steps, log_every=steps, eval_every=0, checkpoint_every=0, test_limit=256)
    config.update(progress=False, figure=False)
    return train.train_and_evaluate(config, folder)["train_images_per_second"]


def table(dataset: str, runs: dict[str, list[dict]], speeds: dict[str, float] | None = None) -> str:
    """The markdown table of one dataset's cells, in the order of :data:`compare.MODELS`."""
    baseline = [r["final"]["error_percent"] for r in runs.get(BASELINES[dataset], [])]
    first = next(iter(runs.values()))[0]["config"]
    lines = [
        f"| model | attention | test error %, mean +- std | seeds | vs {BASELINES[dataset]} (Welch t) "
        "| parameters | multiply-adds | train images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in compare.MODELS[dataset]:
        if model not in runs:
            continue
        errors = [r["final"]["error_percent"] for r in runs[model]]
        mean = f"{statistics.mean(errors):.2f}" + (f" +- {statistics.stdev(errors):.2f}" if len(errors) > 1 else "")
        seeds = ", ".join(f"{e:.2f}" for e in errors)
        if model == BASELINES[dataset] or not baseline:
            versus = "-"
        else:
            difference, t, _, _ = welch(errors, baseline)
            versus = f"{difference:+.2f} ({'n/a' if math.isnan(t) else f'{t:+.1f}'})"
        params, macs = model_cost(dataset, model)
        rates = [r["train_images_per_second"] for r in runs[model] if r.get("train_images_per_second")]
        if speeds and model in speeds:
            rate = f"{speeds[model]:.0f}"
        else:
            rate = f"{statistics.mean(rates):.0f} (runs' mean)" if rates else "-"
        lines.append(
            f"| {model} | {compare.MECHANISMS[model]} | {mean} | {len(errors)}: {seeds} | {versus} | {params:,} "
            f"| {macs / 1e6:.1f} M | {rate} |"
        )
    steps = sorted({r["steps"] for model_runs in runs.values() for r in model_runs})
    batch = first["batch_size"]
    images = ", ".join(f"{s * batch:,}" for s in steps)
    lines += ["", f"Budget: {' / '.join(map(str, steps))} steps of batch {batch} ({images} training images) per run."]
    return "\n".join(lines)


def figure(dataset: str, models: list[str], runs_folder: Path, out: Path) -> Path | None:
    """What each model's seed-0 run attends to on the same six test images; None when a run folder is missing."""
    import jax
    import numpy as np

    from visattn_jax.data import load_data
    from visattn_jax.train import restore_variables
    from visattn_jax.train.experiment import build_model
    from visattn_jax.viz import attention_panels, plot_attention_overview

    folders = {m: runs_folder / f"{dataset}_{m}_seed0" for m in models}
    missing = [str(f) for f in folders.values() if not (f / "checkpoints").is_dir()]
    if missing:
        print(f"No {dataset} figure: no checkpoints in {', '.join(missing)}.")
        return None
    data = load_data(compare.get_config(f"{dataset},{models[0]}"))
    images, labels = data.test_images[:NUM_IMAGES], data.test_labels[:NUM_IMAGES]
    inputs = np.asarray(data.prepare(images))
    rows = []
    for model in models:
        network, _ = build_model(compare.get_config(f"{dataset},{model}"), data.input_shape)
        variables = jax.device_get(restore_variables(folders[model]))
        rows.append((model, attention_panels(network, variables, inputs)))
    path = out / f"{dataset}_attention.png"
    title = f"{dataset}: what each network attends to on test images 0-{NUM_IMAGES - 1} (seed 0)"
    return plot_attention_overview(images, rows, path, labels=labels, title=title)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=_REPOSITORY / "runs" / "compare")
    parser.add_argument("--out", type=Path, default=_REPOSITORY / "experiments" / "results" / "compare")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="measure every model's training images/s again, one after another in this process (the runs' own "
        "rates depend on what else shared the cores); written to <out>/speed.json, which later reports read",
    )
    parser.add_argument(
        "--datasets",
        default=",".join(compare.MODELS),
        help="comma-separated datasets whose speeds (--speed) and figures are made again (default: all)",
    )
    args = parser.parse_args(argv)
    chosen = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(chosen) - set(compare.MODELS))
    if unknown or not chosen:
        parser.error(f"--datasets takes a comma-separated subset of {','.join(compare.MODELS)}; got {args.datasets!r}")
    summaries = read_summaries(args.out)
    if not summaries:
        raise SystemExit(f"No run summaries (<dataset>_<model>_seed<N>.json) in {args.out}: run the cells first.")
    speed_file = args.out / "speed.json"
    speeds = json.loads(speed_file.read_text()) if speed_file.exists() else {}
    if args.speed:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            for dataset, runs in summaries.items():
                if dataset not in chosen:
                    continue
                for model in runs:
                    rate = measure_speed(dataset, model, Path(scratch) / f"{dataset}_{model}")
                    speeds.setdefault(dataset, {})[model] = rate
                    print(f"{dataset} {model}: {rate:.0f} training images/s")
        speed_file.write_text(json.dumps(speeds, indent=1) + "\n")
    sections = []
    for dataset in compare.MODELS:
        if dataset not in summaries:
            continue
        sections.append(f"### {dataset}\n\n{table(dataset, summaries[dataset], speeds.get(dataset))}")
        if dataset not in chosen:
            continue
        models = [m for m in compare.MODELS[dataset] if m in summaries[dataset]]
        path = figure(dataset, models, args.runs, args.out)
        if path is not None:
            print(f"Figure: {path}")
    text = "\n\n".join(sections) + "\n"
    (args.out / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
