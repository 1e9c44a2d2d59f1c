"""The pictures people compare, as PNGs: mIoU vs number of clicks, AR vs number of proposals, precision-recall of
masks and of boundaries, and a histogram of text-prompt IoUs. matplotlib is optional (`pip install
"samflow[plot]"`); figures are drawn with its object API on the Agg canvas, leaving pyplot's state alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samflow.errors import InputError
from samflow.fileio import atomic_path

__all__ = ["plot_boundary_pr", "plot_iou_histogram", "plot_miou_vs_clicks", "plot_precision_recall",
           "plot_recall_vs_proposals", "require_matplotlib"]

INSTALL = 'pip install "samflow[plot]"'


def require_matplotlib() -> None:
    """An InputError naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"--plot draws with matplotlib, which is not installed: {INSTALL}") from None


def _figure(width: float = 5.0, height: float = 4.0) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_miou_vs_clicks(summary: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """mIoU after k clicks for all objects and per size group, from `EvalReport.summary()`."""
    figure = _figure()
    ax = figure.add_subplot()
    for group, stats in summary.items():
        ks = sorted(int(k.split("_")[0]) for k in stats if k.endswith("_click"))
        if not ks:
            continue
        label = f"{group} (n={stats['n']})"
        ax.plot(ks, [stats[f"{k}_click"] for k in ks], marker="o", label=label, linewidth=2 if group == "all" else 1)
    ax.set_xticks(sorted({int(k.split("_")[0]) for stats in summary.values() for k in stats
                          if k.endswith("_click")}))
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "mIoU vs number of clicks")
    return _save(figure, Path(path))


def plot_recall_vs_proposals(recall: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Mask AR at 10, 100 and 1000 proposals (log scale), and AR@1000 by object size."""
    figure = _figure()
    ax = figure.add_subplot()
    counts = [10, 100, 1000]
    ax.plot(counts, [recall[f"AR@{n}"] for n in counts], marker="o", linewidth=2, label="all")
    for key, marker in (("ARs@1000", "v"), ("ARm@1000", "s"), ("ARl@1000", "^")):
        if key in recall and recall[key] >= 0:
            ax.plot([1000], [recall[key]], marker=marker, linestyle="none", label=key.replace("@1000", " @1000"))
    ax.set_xscale("log")
    ax.set_xlabel("number of proposals")
    ax.set_ylabel("mask AR (IoU 0.5:0.95)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left")
    ax.set_title(title or "AR vs number of proposals")
    return _save(figure, Path(path))


def plot_precision_recall(curve: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """COCOeval's precision at its 101 recall levels, per IoU threshold (averaged over categories)."""
    figure = _figure()
    ax = figure.add_subplot()
    for iou, precision in curve["precision"].items():
        if precision:
            ax.plot(curve["recall"], precision, label=f"IoU {iou}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or "mask precision-recall")
    return _save(figure, Path(path))


def plot_boundary_pr(metrics: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The boundary precision-recall curve over thresholds with iso-F contours and the ODS point."""
    figure = _figure(4.5, 4.5)
    ax = figure.add_subplot()
    for f in np.arange(0.1, 1.0, 0.1):
        r = np.linspace(f / 2 + 1e-3, 1, 100)
        p = f * r / (2 * r - f)
        ok = (p >= 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="#9c9", linewidth=0.5)
    curve = metrics["curve"]
    keep = np.array(curve["recall"]) >= 1e-3
    ax.plot(np.array(curve["recall"])[keep], np.array(curve["precision"])[keep], linewidth=2,
            label=f"ODS {metrics['ODS']:.3f}, OIS {metrics['OIS']:.3f}, AP {metrics['AP']:.3f}")
    ax.plot([metrics["ODS_recall"]], [metrics["ODS_precision"]], marker="o", color="black")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "boundary precision-recall")
    return _save(figure, Path(path))


def plot_iou_histogram(ious: Sequence[float] | np.ndarray, path: str | Path, title: str = "") -> Path:
    """How the IoUs of prompted masks spread, with their mean."""
    figure = _figure()
    ax = figure.add_subplot()
    values = np.asarray(ious, dtype=float)
    ax.hist(values, bins=np.linspace(0, 1, 21), color="#48c", edgecolor="white")
    ax.axvline(values.mean(), color="black", linestyle="--", label=f"mIoU {values.mean():.3f} (n={len(values)})")
    ax.set_xlabel("IoU")
    ax.set_ylabel("objects")
    ax.legend(loc="upper left")
    ax.set_title(title or "IoU of text-prompted masks")
    return _save(figure, Path(path))
