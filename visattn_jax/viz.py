"""Figures for the experiments and notebooks (matplotlib, headless-safe).

Every function draws on a ``matplotlib.figure.Figure`` (the object API: no pyplot, no backend switch), writes a
PNG and returns its path, so it works headless and leaves a notebook's inline display alone; show the file with
``IPython.display.Image(path)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "attention_panels",
    "excitation_figure",
    "glimpse_figure",
    "grid_to_pixels",
    "mask_figure",
    "plot_attention_masks",
    "plot_attention_overview",
    "plot_excitations",
    "plot_glimpses",
    "plot_misclassified",
    "plot_seed_curves",
    "plot_training_curve",
    "plot_transformer",
    "sown_values",
    "transformer_figure",
]


def _save(fig, path: str | Path, *, title: str = "") -> Path:
    """Titles ``fig`` (if ``title``), lays it out and writes it to ``path`` as a PNG; returns the path."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def grid_to_pixels(grid: np.ndarray, height: int, width: int, *, align_corners: bool = False) -> np.ndarray:
    """Normalised ``(x, y)`` grid ``[..., 2]`` -> pixel coordinates ``[..., 2]`` (x = column, y = row)."""
    grid = np.asarray(grid, np.float64)
    size = np.array([width, height], np.float64)
    if align_corners:
        return (grid + 1) / 2 * (size - 1)
    return ((grid + 1) * size - 1) / 2


def sown_values(model, variables, images, leaf: str, *, batch_size: int = 250) -> dict[str, np.ndarray]:
    """Every value ``model`` sows under ``intermediates/.../leaf`` for ``images``, in network order.

    ``leaf`` is ``"excitation"`` (SE blocks, ``[N, C]``) or ``"mask"`` (attention modules, ``[N, H, W, C]``).
    Runs ``model.apply(variables, x, train=False, mutable=["intermediates"])`` over batches of ``batch_size``
    and returns ``{"layer1_0/se": [N, ...], ...}`` (the module path without the leaf) as NumPy arrays.
    Raises ``ValueError`` when the network sows no such value.
    """
    import jax
    from flax import traverse_util

    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"])[1])
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        state = apply(variables, images[start : start + batch_size])
        flat = traverse_util.flatten_dict(state.get("intermediates", {}), sep="/")
        for path, values in flat.items():
            if path.endswith("/" + leaf) or path == leaf:
                chunks.setdefault(path.removesuffix(leaf).rstrip("/") or "/", []).append(np.asarray(values[0]))
    if not chunks:
        raise ValueError(f"{type(model).__name__} sows no intermediates/.../{leaf}; nothing to draw.")
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def plot_transformer(
    inputs: np.ndarray,
    outputs: np.ndarray,
    grids: np.ndarray,
    path: str | Path,
    *,
    titles: list[str] | None = None,
    align_corners: bool = False,
    every: int = 4,
) -> Path:
    """Inputs with the sampling grid drawn on them (outline and every ``every``-th point), and the outputs.

    Args:
      inputs: ``[n, H, W, 1]`` images the transformer read.
      outputs: ``[n, h, w, 1]`` what it produced.
      grids: ``[n, h, w, 2]`` normalised sampling grids (pull: where each output pixel read from).
      path: where to write the PNG.
      titles: optional per-column titles (e.g. predicted labels).
    """
    from matplotlib.figure import Figure

    n = len(inputs)
    fig = Figure(figsize=(1.6 * n, 3.4))
    axes = fig.subplots(2, n, squeeze=False)
    height, width = inputs.shape[1:3]
    for i in range(n):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(inputs[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        pix = grid_to_pixels(grids[i], height, width, align_corners=align_corners)
        outline = np.concatenate([pix[0, :], pix[:, -1], pix[-1, ::-1], pix[::-1, 0]])
        top.plot(outline[:, 0], outline[:, 1], color="tab:orange", linewidth=1.0)
        points = pix[::every, ::every].reshape(-1, 2)
        top.scatter(points[:, 0], points[:, 1], s=1.5, color="tab:cyan")
        top.set_xlim(-0.5, width - 0.5)
        top.set_ylim(height - 0.5, -0.5)
        bottom.imshow(outputs[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            top.set_title(titles[i], fontsize=8)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input + grid", fontsize=8)
    axes[1, 0].set_ylabel("transformer output", fontsize=8)
    return _save(fig, path)


def plot_glimpses(
    images: np.ndarray,
    locations: np.ndarray,
    path: str | Path,
    *,
    size: int,
    num_scales: int,
    titles: list[str] | None = None,
) -> Path:
    """RAM glimpse trajectories: each image with its glimpse centres (numbered path) and every patch outline.

    Args:
      images: ``[n, H, W, 1]``.
      locations: ``[n, T, 2]`` normalised glimpse centres (x, y), in the order they were taken.
      path: where to write the PNG.
      size, num_scales: the retina's patch size and number of scales (for the outlines).
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from visattn_jax.ram import glimpse_boxes

    n, height, width = images.shape[:3]
    steps = locations.shape[1]
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, steps))
    fig = Figure(figsize=(2.0 * n, 2.3))
    axes = fig.subplots(1, n, squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        boxes = glimpse_boxes(locations[i], size=size, num_scales=num_scales, height=height, width=width)
        centres = grid_to_pixels(locations[i], height, width)
        ax.plot(centres[:, 0], centres[:, 1], color="white", linewidth=0.6, alpha=0.7)
        for t in range(steps):
            for left, top, right, bottom in boxes[t]:
                ax.add_patch(
                    Rectangle((left, top), right - left, bottom - top, fill=False, linewidth=0.7, edgecolor=colors[t])
                )
            ax.text(centres[t, 0], centres[t, 1], str(t + 1), color=colors[t], fontsize=6, ha="center", va="center")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    return _save(fig, path)


def plot_training_curve(metrics_jsonl: str | Path, path: str | Path, *, title: str = "") -> Path:
    """Training loss and test error against steps, read from a run's ``metrics.jsonl``.

    Uses matplotlib's object API (no pyplot, no backend switch), so it is safe in notebooks and headless.
    """
    import json

    from matplotlib.figure import Figure

    train_steps, losses, eval_steps, errors = [], [], [], []
    for line in Path(metrics_jsonl).read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train_steps.append(record["step"])
            losses.append(record["loss"])
        if "eval/error_percent" in record:
            eval_steps.append(record["step"])
            errors.append(record["eval/error_percent"])
    fig = Figure(figsize=(7.5, 3.0))
    ax_loss, ax_err = fig.subplots(1, 2)
    ax_loss.plot(train_steps, losses, linewidth=0.8)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_err.plot(eval_steps, errors, marker="o", markersize=3)
    ax_err.set_xlabel("step")
    ax_err.set_ylabel("test error (%)")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
    return _save(fig, path, title=title)


def plot_seed_curves(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    path: str | Path,
    *,
    xlabel: str = "epoch",
    ylabel: str = "test error (%)",
    title: str = "",
) -> Path:
    """Repeated runs of several networks on one axis: one colour per network, one line per seed.

    Args:
      curves: network label -> one ``(x, y)`` pair of equal-length 1-D arrays per seed (e.g. epochs and test
        error after each evaluation); the label is the legend's, so it can carry the final mean +- std.
    """
    from matplotlib.figure import Figure

    if not curves or not all(curves.values()):
        raise ValueError(f"curves needs at least one network with at least one seed curve; got {curves!r}")
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    for colour, (label, runs) in enumerate(curves.items()):
        for i, (x, y) in enumerate(runs):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            if x.ndim != 1 or x.shape != y.shape:
                raise ValueError(
                    f"{label!r}, seed curve {i}: x and y must be 1-D of one length; got {x.shape}, {y.shape}"
                )
            style = dict(color=f"C{colour}", marker="o", markersize=3, linewidth=0.9, alpha=0.85)
            ax.plot(x, y, label=label if i == 0 else None, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, title=title)


def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    count: int = 16,
) -> Path:
    """The first ``count`` test images the model got wrong, titled "true -> predicted".

    Args:
      images: uint8 ``[N, H, W, C]`` (C = 1 or 3); labels, predictions: int ``[N]``.
    """
    from matplotlib.figure import Figure

    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))[:count]
    name = (lambda i: class_names[i]) if class_names else str
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(1.3 * cols, 1.5 * rows))
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, wrong, strict=False):
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(f"{name(int(labels[i]))}\n-> {name(int(predictions[i]))}", fontsize=7)
    return _save(fig, path)


def plot_excitations(
    excitations: dict[str, np.ndarray],
    labels: np.ndarray,
    path: str | Path,
    *,
    classes: list[int],
    class_names: list[str] | None = None,
) -> Path:
    """The SENet paper's Figure 6: mean excitation per channel, one line per class, one panel per SE block.

    Args:
      excitations: block name -> ``[N, C]`` excitation vectors (the sown ``intermediates/excitation`` of
        :class:`visattn_jax.se.SqueezeExcite`) for ``N`` images.
      labels: int ``[N]`` classes of those images.
      classes: the classes to draw (each averaged over its images); a dashed line is the mean over all.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = np.asarray(labels)
    fig = Figure(figsize=(4.0 * len(excitations) + 0.8, 2.8))
    axes = np.atleast_1d(fig.subplots(1, len(excitations)))
    for ax, (name, values) in zip(axes, excitations.items(), strict=True):
        values = np.asarray(values, np.float64)
        for c in classes:
            if np.any(labels == c):
                ax.plot(values[labels == c].mean(0), linewidth=0.8, label=class_names[c] if class_names else str(c))
        ax.plot(values.mean(0), "k--", linewidth=0.8, label="all")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("channel index", fontsize=8)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("mean excitation", fontsize=8)
    handles, names = axes[-1].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.legend(handles, names, fontsize=7, loc="center right")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_attention_masks(images: np.ndarray, masks: dict[str, np.ndarray], path: str | Path) -> Path:
    """Residual Attention soft masks over their images: each stage's mask averaged over channels, upsampled to
    the image and overlaid (the paper's Figure 1 idea: which regions each stage enhances).

    Args:
      images: ``[n, H, W, 3]`` (uint8 or floats in [0, 1]) or ``[n, H, W, 1]``.
      masks: stage name -> ``[n, h, w, C]`` masks (the sown ``intermediates/mask`` of
        :class:`visattn_jax.residual_attention.AttentionModule`).
    """
    from matplotlib.figure import Figure

    images = np.asarray(images)
    images = images / 255.0 if images.dtype == np.uint8 else np.clip(images, 0, 1)
    n = len(images)
    fig = Figure(figsize=(1.6 * n, 1.6 * (1 + len(masks))))
    axes = np.atleast_2d(fig.subplots(1 + len(masks), n, squeeze=False))
    for i in range(n):
        image = images[i] if images.shape[-1] == 3 else images[i, ..., 0]
        axes[0, i].imshow(image, cmap=None if images.shape[-1] == 3 else "gray")
        for row, (name, mask) in enumerate(masks.items(), start=1):
            mean = np.asarray(mask[i], np.float64).mean(-1)
            ax = axes[row, i]
            ax.imshow(image, cmap=None if images.shape[-1] == 3 else "gray")
            height, width = images.shape[1:3]
            ax.imshow(mean, cmap="inferno", alpha=0.55, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            if i == 0:
                ax.set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------------
# What a trained network attends to: the figure each registered model names (visattn_jax.models.model_info).
# One signature: (model, variables, inputs, labels, folder, *, display=None, class_names=None, num_classes=None)
# -> the PNG's path, or None when the network has nothing of the kind to show (a plain baseline). ``inputs`` are
# what the model reads (normalised), ``display`` the same images for drawing (default: ``inputs``).


def transformer_figure(model, variables, inputs, labels, folder, *, display=None, class_names=None, num_classes=None):
    """A spatial-transformer classifier (:class:`visattn_jax.stn.STClassifier`): eight inputs with the sampling
    grid drawn on them, and what the transformer made of them, titled with the prediction (``stn_figure.png``)."""
    from visattn_jax.sampling import grid_sample

    del labels, display, class_names, num_classes
    if getattr(model, "transformer", None) is None:
        return None
    inputs = np.asarray(inputs[:8])
    logits, state = model.apply(variables, inputs, mutable=["intermediates"])
    grid = state["intermediates"]["transformer"]["grid"][0]
    # The transformer's output is the sown grid sampled again: no second pass through the localisation net.
    st = model.transformer
    outputs = grid_sample(inputs, grid, align_corners=st.align_corners, padding_mode=st.padding_mode)
    titles = [f"pred {int(p)}" for p in np.argmax(np.asarray(logits), -1)]
    return plot_transformer(
        inputs, np.asarray(outputs), np.asarray(grid), Path(folder) / "stn_figure.png", titles=titles
    )


def glimpse_figure(model, variables, inputs, labels, folder, *, display=None, class_names=None, num_classes=None):
    """A recurrent attention model (:class:`visattn_jax.ram.RAM`): the glimpse paths of one sampled episode
    (key 0) on eight inputs, titled with the prediction (``ram_figure.png``)."""
    import jax

    del labels, display, class_names, num_classes
    inputs = np.asarray(inputs[:8])
    outputs = model.apply(variables, inputs, jax.random.PRNGKey(0))
    titles = [f"pred {int(p)}" for p in np.argmax(np.asarray(outputs["logits"]), -1)]
    return plot_glimpses(
        inputs,
        np.asarray(outputs["locations"]),
        Path(folder) / "ram_figure.png",
        size=model.glimpse_size,
        num_scales=model.num_scales,
        titles=titles,
    )


def excitation_figure(model, variables, inputs, labels, folder, *, display=None, class_names=None, num_classes=None):
    """A network with SE-style channel gates (SE, CBAM): the SENet paper's Fig. 6, mean excitation per channel
    for four classes (0, 3, 5, 8) at an early, a middle and the last block, over all ``inputs``
    (``excitations.png``). None when the network sows no excitation."""
    del display
    try:
        values = sown_values(model, variables, inputs, "excitation")
    except ValueError:
        return None
    blocks = list(values)
    chosen = [blocks[0], blocks[len(blocks) // 2], blocks[-1]] if len(blocks) >= 3 else blocks
    classes = [c for c in (0, 3, 5, 8) if num_classes is None or c < num_classes]
    return plot_excitations(
        {b: values[b] for b in chosen},
        labels,
        Path(folder) / "excitations.png",
        classes=classes,
        class_names=class_names,
    )


def mask_figure(model, variables, inputs, labels, folder, *, display=None, class_names=None, num_classes=None):
    """A Residual Attention network: the soft mask of the last module of each stage on six images
    (``attention_masks.png``). None when the network sows no mask."""
    del labels, class_names, num_classes
    try:
        values = sown_values(model, variables, inputs[:6], "mask")
    except ValueError:
        return None
    stages: dict[str, np.ndarray] = {}
    for name, mask in values.items():  # "stage2_0", "stage2_1" -> the last, "stage2_1"
        stages[name.split("_")[0]] = mask
    shown = inputs if display is None else display
    return plot_attention_masks(np.asarray(shown[:6]), stages, Path(folder) / "attention_masks.png")


# ----------------------------------------------------------------------------------------------------------
# One figure for many mechanisms: what each network attends to on the same images (the cross-family comparison,
# experiments/compare_report.py). A network's panel is read from what it computes, not from its family: a
# sampling grid it sows (spatial transformers), glimpse locations it returns (RAM), soft masks it sows (CBAM's
# spatial gate, Residual Attention masks) or channel excitations (SE).


def attention_panels(model, variables, inputs, *, key=None) -> dict:
    """What ``model`` attends to on each of ``inputs`` ``[n, H, W, C]``, as data to draw, in this order of
    preference:

    - ``{"kind": "grid", "grid": [n, h, w, 2]}``: a sown sampling grid (normalised, pull: where each output
      pixel reads; the first transformer's);
    - ``{"kind": "glimpses", "locations": [n, T, 2], "size", "num_scales"}``: glimpse centres a model returns
      (RAM; one episode sampled with ``key``, default ``PRNGKey(0)``);
    - ``{"kind": "mask", "mask": [n, h, w]}``: the channel mean of the last sown soft mask at the finest
      resolution (CBAM's spatial gate, a Residual Attention module's mask);
    - ``{"kind": "excitation", "excitation": [n, C]}``: the last sown channel excitation (SE);
    - ``{"kind": "none"}``: nothing of the kind (a plain network).

    Every panel also has ``"predictions"`` ``[n]``. Evaluation mode (``train=False`` where the model takes it).
    """
    import jax
    from flax import traverse_util

    from visattn_jax.objectives import eval_kwargs, takes_argument

    inputs = np.asarray(inputs)
    args = ((jax.random.PRNGKey(0) if key is None else key),) if takes_argument(model, "key") else ()
    outputs, state = model.apply(variables, inputs, *args, mutable=["intermediates"], **eval_kwargs(model))
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    panel: dict = {"predictions": np.argmax(np.asarray(logits), -1)}
    sown = traverse_util.flatten_dict(state.get("intermediates", {}), sep="/")

    def leaves(name: str) -> list[np.ndarray]:
        return [np.asarray(v[0]) for path, v in sown.items() if path == name or path.endswith("/" + name)]

    if grids := leaves("grid"):
        return {**panel, "kind": "grid", "grid": grids[0]}
    if isinstance(outputs, dict) and "locations" in outputs:
        return {
            **panel,
            "kind": "glimpses",
            "locations": np.asarray(outputs["locations"]),
            "size": model.glimpse_size,
            "num_scales": model.num_scales,
        }
    if masks := leaves("mask"):
        finest = max(m.shape[1] * m.shape[2] for m in masks)
        last = [m for m in masks if m.shape[1] * m.shape[2] == finest][-1]
        return {**panel, "kind": "mask", "mask": last.astype(np.float64).mean(-1)}
    if excitations := leaves("excitation"):
        return {**panel, "kind": "excitation", "excitation": excitations[-1].astype(np.float64)}
    return {**panel, "kind": "none"}


def plot_attention_overview(
    images: np.ndarray,
    rows: list[tuple[str, dict]],
    path: str | Path,
    *,
    labels: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """One row per network, one column per image: what each attends to (:func:`attention_panels`) on the same
    images. Grids: the sampled region's outline on the image; glimpses: the path and each glimpse's patches;
    masks: the mask over the image; excitations: the channel gate as bars under the image. Each cell is titled
    with the prediction (red when wrong).

    Args:
      images: ``[n, H, W, C]`` (C 1 or 3; uint8, or floats in [0, 1]) as they are shown.
      rows: ``(row label, panels)`` per network, the panels of the same ``n`` images.
      labels: int ``[n]`` true classes (marks wrong predictions).
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from visattn_jax.ram import glimpse_boxes

    images = np.asarray(images)
    images = images / 255.0 if images.dtype == np.uint8 else np.clip(images, 0, 1)
    n, height, width = images.shape[:3]
    fig = Figure(figsize=(1.5 * n + 1.4, 1.6 * len(rows) + (0.3 if title else 0)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, panel) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            shown = images[i] if images.shape[-1] == 3 else images[i, ..., 0]
            ax.imshow(shown, cmap=None if images.shape[-1] == 3 else "gray", vmin=0, vmax=1)
            kind = panel["kind"]
            if kind == "grid":
                pix = grid_to_pixels(panel["grid"][i], height, width)
                outline = np.concatenate([pix[0, :], pix[:, -1], pix[-1, ::-1], pix[::-1, 0], pix[:1, 0]])
                ax.plot(outline[:, 0], outline[:, 1], color="tab:orange", linewidth=1.2)
            elif kind == "glimpses":
                steps = panel["locations"].shape[1]
                colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, steps))
                boxes = glimpse_boxes(
                    panel["locations"][i],
                    size=panel["size"],
                    num_scales=panel["num_scales"],
                    height=height,
                    width=width,
                )
                centres = grid_to_pixels(panel["locations"][i], height, width)
                ax.plot(centres[:, 0], centres[:, 1], color="white", linewidth=0.6, alpha=0.8)
                for t in range(steps):
                    left, top, right, bottom = boxes[t][0]  # the finest scale's patch
                    ax.add_patch(
                        Rectangle(
                            (left, top), right - left, bottom - top, fill=False, linewidth=0.7, edgecolor=colors[t]
                        )
                    )
            elif kind == "mask":
                ax.imshow(panel["mask"][i], cmap="inferno", alpha=0.55, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            elif kind == "excitation":
                inset = ax.inset_axes((0.0, 0.0, 1.0, 0.3))
                values = panel["excitation"][i]
                inset.bar(np.arange(len(values)), values, width=1.0, color="tab:cyan")
                inset.set_ylim(0, 1)
                inset.set_xlim(-0.5, len(values) - 0.5)
                inset.set_axis_off()
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            prediction = int(panel["predictions"][i])
            wrong = labels is not None and prediction != int(labels[i])
            ax.set_title(f"pred {prediction}", fontsize=7, color="tab:red" if wrong else "black")
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    return _save(fig, path, title=title)
