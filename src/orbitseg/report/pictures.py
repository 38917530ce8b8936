"""Pictures a person looks at: orthogonal views with the labels in their colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orbitseg.constants import (
    LABEL_COLOURS,
    LABEL_TITLES,
    NERVE,
    EYEBALL,
    STRUCTURES,
    WINDOW_LEVEL,
    WINDOW_WIDTH,
)
from orbitseg.errors import ExistsError
from orbitseg.io.atomic import atomic_path
from orbitseg.io.orient import to_canonical
from orbitseg.io.volume import Volume
from orbitseg.preprocess.window import apply_window


def label_rgba(labels: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Colour a 2D label map: ``(H, W)`` ints -> ``(H, W, 4)`` float RGBA, background transparent."""
    rgba = np.zeros(labels.shape + (4,), dtype=np.float32)
    for lab in STRUCTURES:
        sel = labels == lab
        rgba[sel, :3] = np.asarray(LABEL_COLOURS[lab]) / 255.0
        rgba[sel, 3] = alpha
    return rgba


def views_point(scan: Volume, labels: Volume | None = None) -> tuple[int, int, int]:
    """Index ``(k, j, i)`` of a canonical (LPS) volume that cuts through the orbits.

    With labels: the axial slice and coronal plane through the middle of the
    optic nerves (or globes), the sagittal plane through the patient's right
    orbit.  Without labels: a head-shape guess (globes sit ~20 mm behind the
    front of the head, ~32 mm either side of the midline).
    """
    nz, ny, nx = scan.shape
    if labels is not None:
        for lab in (NERVE, EYEBALL):
            idx = np.argwhere(labels.array == lab)
            if len(idx):
                k, j = (int(np.median(idx[:, 0])), int(np.median(idx[:, 1])))
                right = idx[idx[:, 2] < np.median(idx[:, 2])]  # LPS: low i = patient right
                i = int(np.median((right if len(right) else idx)[:, 2]))
                return k, j, i
    head = scan.array > -500
    if not head.any():
        return nz // 2, ny // 2, nx // 2
    ks, js, is_ = (np.flatnonzero(head.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    sx, sy, _ = scan.spacing
    j = min(int(js[0] + 20.0 / sy), ny - 1)
    centre_i = (is_[0] + is_[-1]) / 2
    i = int(np.clip(centre_i - 32.0 / sx, 0, nx - 1))
    return (ks[0] + ks[-1]) // 2, j, i


def side_letters(ax, extent: tuple[float, float, float, float], letters: tuple[str, str], *,
                 fontsize: int = 11) -> None:
    """Write the patient sides ``letters`` (image left, image right; e.g. ``("R", "L")``) inside the image drawn
    with ``extent`` (left, right, bottom, top) on ``ax``.  Placed in data units, not axes fractions: an axes
    box is wider than a tall image, and a letter at its edge sits beside the next view."""
    x0, x1, y0, y1 = extent
    for x, letter, ha in ((x0 + 0.02 * (x1 - x0), letters[0], "left"), (x1 - 0.02 * (x1 - x0), letters[1], "right")):
        ax.text(x, (y0 + y1) / 2, letter, color="yellow", fontsize=fontsize, va="center", ha=ha)


def render_views(
    scan: Volume,
    labels: Volume | None,
    out: str | Path,
    *,
    title: str | None = None,
    level: float = WINDOW_LEVEL,
    width: float = WINDOW_WIDTH,
    point: tuple[int, int, int] | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> Path:
    """Axial, coronal and sagittal views through the orbits, labels overlaid.

    The volume is first brought to canonical LPS orientation, so the pictures
    follow radiological convention whatever the file's direction matrix: the
    patient's right is on the left of axial and coronal views, anterior is up
    in axial views and left in sagittal views, superior is up.

    Parameters
    ----------
    scan : CT volume (HU)
    labels : label volume on the scan's grid, or None
    out : PNG path (written atomically; an existing file is replaced only when ``overwrite``)
    point : canonical index (k, j, i) to cut through; default :func:`views_point`

    Raises
    ------
    ExistsError : ``out`` exists and ``overwrite`` is False (checked before anything is drawn)
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExistsError(out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    scan_c = to_canonical(scan)
    lab_c = to_canonical(labels) if labels is not None else None
    k, j, i = point if point is not None else views_point(scan_c, lab_c)
    sx, sy, sz = scan_c.spacing
    a = scan_c.array
    # (image, label, extent (left, right, bottom, top) in mm, name); rows flipped so superior is up
    planes = [
        (a[k], None if lab_c is None else lab_c.array[k], (0, a.shape[2] * sx, a.shape[1] * sy, 0), f"axial k={k}"),
        (a[::-1, j, :], None if lab_c is None else lab_c.array[::-1, j, :], (0, a.shape[2] * sx, 0, a.shape[0] * sz), f"coronal j={j}"),
        (a[::-1, :, i], None if lab_c is None else lab_c.array[::-1, :, i], (0, a.shape[1] * sy, 0, a.shape[0] * sz), f"sagittal i={i}"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), facecolor="black")
    for ax, (img, lab, extent, name) in zip(axes, planes):
        ax.imshow(apply_window(img, level=level, width=width), cmap="gray", extent=extent, interpolation="nearest")
        if lab is not None:
            ax.imshow(label_rgba(lab), extent=extent, interpolation="nearest")
        ax.set_title(name, color="white", fontsize=9)
        ax.axis("off")
    for ax, (_, _, extent, _), letters in zip(axes, planes, (("R", "L"), ("R", "L"), ("A", "P"))):
        side_letters(ax, extent, letters)
    if lab_c is not None:
        handles = [Patch(color=np.asarray(LABEL_COLOURS[s]) / 255, label=LABEL_TITLES[s]) for s in STRUCTURES]
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=9)
    sup = title or (scan.path.name if scan.path else "scan")
    fig.suptitle(f"{sup}   window L{level:g}/W{width:g} HU   spacing {sx:.2f}x{sy:.2f}x{sz:.2f} mm",
                 color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    try:
        with atomic_path(out, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, facecolor="black", format="png")
    finally:
        plt.close(fig)
    return out


def plot_training_history(ax_loss, ax_dice, history: list[dict], *, loss_title: str = "loss",
                          dice_title: str = "validation Dice") -> None:
    """Draw one run's training loss and validation Dice per structure (with the mean and a
    dotted line at the chosen epoch) on two matplotlib axes.

    ``history``: one dict per epoch with ``epoch``, ``train_loss``, ``val_dice_{eyeball,muscles,
    nerve}``, ``val_dice_mean`` and ``best`` (1 where the checkpoint improved), as the training
    loop keeps it and as ``log.csv`` stores it; missing values are drawn as gaps.
    """
    import math

    from orbitseg.constants import SHORT_NAMES, label_colour_hex

    ep = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    mark = "." if len(ep) < 30 else None
    ax_loss.plot(ep, [h.get("train_loss", math.nan) for h in history], "k-", marker=mark)
    ax_loss.set_ylabel("training loss"), ax_loss.set_title(loss_title, fontsize=9)
    for lab in STRUCTURES:
        ax_dice.plot(ep, [h.get(f"val_dice_{SHORT_NAMES[lab]}", math.nan) for h in history],
                     color=label_colour_hex(lab), label=LABEL_TITLES[lab], marker=mark)
    ax_dice.plot(ep, [h.get("val_dice_mean", math.nan) for h in history], "k--", label="mean")
    best = [h["epoch"] for h in history if h.get("best") == 1 and "epoch" in h]
    if best:
        ax_dice.axvline(best[-1], color="grey", lw=0.8, ls=":")
    ax_dice.set_ylim(0, 1), ax_dice.set_ylabel("validation Dice"), ax_dice.set_title(dice_title, fontsize=9)
    ax_dice.legend(fontsize=7, loc="lower right")
    for ax in (ax_loss, ax_dice):
        ax.set_xlabel("epoch"), ax.grid(alpha=0.3)
