"""PNG plots for evaluation reports (ROC with the operating point, reliability diagram, confusion matrix) and for
experiments (test AUROC against the fraction of labels).

Matplotlib with the Agg backend (no display on a cluster pod); each function returns PNG
bytes so the caller decides where they go (a local folder or S3, through ``storage``).
"""

from __future__ import annotations

import io

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def roc_png(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    operating_point: tuple[float, float, str] | None = None,
) -> bytes:
    """ROC curves ``{label: (y_binary, score)}``; ``operating_point`` = (sensitivity, specificity, label).

    The legend's AUROC is the registry's, the number the report's tables show.
    """
    from sklearn.metrics import roc_curve

    from medxfer.metrics import METRICS

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for label, (y, score) in curves.items():
        y = np.asarray(y).astype(bool)
        if y.all() or (~y).all():
            continue
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, lw=1.6, label=f"{label} (AUROC {METRICS['auroc'].point(y, score):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    if operating_point is not None:
        sens, spec, label = operating_point
        ax.plot([1 - spec], [sens], marker="o", ms=8, color="crimson", ls="none", label=label)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def reliability_png(calibration: dict, title: str) -> bytes:
    """Reliability diagram of a report's ``calibration`` (:func:`medxfer.metrics.calibration.reliability`:
    scikit-learn's ``calibration_curve`` bins), with bin counts underneath."""
    plt = _plt()
    edges = np.asarray(calibration["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    observed = np.asarray(calibration["observed"], dtype=float)
    counts = np.asarray(calibration["count"], dtype=float)
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(4.8, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = edges[1] - edges[0]
    ok = np.isfinite(observed)
    ax.bar(centers[ok], observed[ok], width=width * 0.9, color="steelblue", alpha=0.8, label="observed")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    mc = np.asarray(calibration["mean_confidence"], dtype=float)
    ax.plot(mc[ok], observed[ok], marker="o", color="navy", lw=1, ms=3)
    ax.set_ylabel("observed frequency")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\n({calibration.get('kind', 'confidence')})", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    axc.bar(centers, counts, width=width * 0.9, color="grey")
    axc.set_xlabel("predicted probability")
    axc.set_ylabel("count")
    axc.set_xlim(0, 1)
    return _png(fig)


def confusion_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    """Confusion matrix with counts and row-normalised percentages (rows = true class)."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    k = len(labels)
    row = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, row, out=np.zeros_like(m), where=row > 0)
    size = max(3.6, 0.7 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(m[i, j])}\n{frac[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def label_efficiency_png(rows: list[dict], title: str) -> bytes:
    """Test AUROC against the label fraction, one line per arm; below, each arm minus scratch.

    The bars are 95% bootstrap intervals (the test images resampled) where the trials carry their test
    scores: of the seed-mean AUROC above, of the paired difference below. Without scores, the spread
    over seeds (± std) above and no lower panel.
    """
    plt = _plt()
    arms = sorted({r["arm"] for r in rows}, key=lambda a: (a != "scratch", a))
    fracs = sorted({r["fraction"] for r in rows})
    with_ci = all(r.get("test_auroc_ci") and all(np.isfinite(r["test_auroc_ci"])) for r in rows)
    paired = [r for r in rows if r.get("paired_vs_scratch") and all(np.isfinite(r["paired_vs_scratch"]["ci"]))]
    if paired:
        fig, (ax, axd) = plt.subplots(2, 1, figsize=(6.4, 6.2), dpi=120, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = {a: f"C{i}" for i, a in enumerate(arms)}
    # Arms side by side at each fraction (a few per cent apart on the log axis), so intervals do not hide each other.
    dodge = {a: 1 + 0.04 * (i - (len(arms) - 1) / 2) for i, a in enumerate(arms)}
    for arm in arms:
        rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fraction"])
        x = np.array([r["fraction"] for r in rs]) * dodge[arm]
        m = np.array([r["test_auroc_mean"] for r in rs])
        if with_ci:
            err = np.abs(np.array([r["test_auroc_ci"] for r in rs]).T - m)
        else:
            err = np.array([r["test_auroc_std"] for r in rs])
        ax.errorbar(x, m, yerr=err, marker="o", capsize=3, label=arm, color=colours[arm],
                    linestyle="--" if arm == "scratch" else "-")
    ax.set_ylabel("test AUROC " + ("(mean over seeds, 95% CI)" if with_ci else "(mean ± std over seeds)"))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bottom = ax
    if paired:
        for arm in arms:
            rs = sorted((r for r in paired if r["arm"] == arm), key=lambda r: r["fraction"])
            if not rs:
                continue
            x = np.array([r["fraction"] for r in rs]) * dodge[arm]
            d = np.array([r["paired_vs_scratch"]["difference"] for r in rs])
            err = np.abs(np.array([r["paired_vs_scratch"]["ci"] for r in rs]).T - d)
            axd.errorbar(x, d, yerr=err, marker="o", capsize=3, color=colours[arm], label=f"{arm} - scratch")
        axd.axhline(0.0, color="grey", lw=0.8, ls="--")
        axd.set_ylabel("AUROC minus scratch\n(paired 95% CI)")
        axd.grid(alpha=0.3)
        bottom = axd
    bottom.set_xscale("log")
    bottom.set_xticks(fracs)
    bottom.set_xticklabels([f"{f:.0%}" for f in fracs])
    bottom.minorticks_off()
    bottom.set_xlabel("fraction of target training labels")
    fig.tight_layout()
    return _png(fig)  # bbox_inches="tight": long titles and two-line labels are not cut
