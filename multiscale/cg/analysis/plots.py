"""PNG figures of the validation report: reference against CG, one panel per type tuple."""

from __future__ import annotations

import io
import math
from typing import Dict, Optional, Tuple

import numpy as np

from multiscale.cg.analysis.beads import _key_str


def _figure(n_panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, max(1, n_panels))
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


_MAX_PANELS = 24


def _plot_bonded(kind: str, histograms, n_terms) -> Optional[bytes]:
    keys = sorted(histograms, key=lambda k: (-n_terms[k], k))[:_MAX_PANELS]
    if not keys:
        return None
    fig, axes = _figure(len(keys))
    scale = 1.0 if kind == "bond" else 180.0 / math.pi  # angles shown in degrees
    unit = "nm" if kind == "bond" else "deg"
    for ax, key in zip(axes, keys):
        h_ref, h_cg, edges = histograms[key]
        x = edges * scale
        ax.stairs(h_ref / scale, x, label="reference", color="k")
        ax.stairs(h_cg / scale, x, label="CG", color="tab:red")
        ax.set_title(_key_str(key), fontsize=9)
        ax.set_xlabel(f"{kind} ({unit})")
        ax.set_ylabel(f"density (1/{unit})")
    axes[0].legend(fontsize=8)
    if len(histograms) > len(keys):
        fig.suptitle(f"{len(keys)} most frequent of {len(histograms)} {kind} types")
    return _png(fig)


def _plot_rdfs(curves) -> Optional[bytes]:
    if not curves:
        return None
    keys = list(curves)[:_MAX_PANELS]
    fig, axes = _figure(len(keys))
    for ax, key in zip(axes, keys):
        r, g_ref, g_cg = curves[key]
        ax.plot(r, g_ref, color="k", label="reference")
        ax.plot(r, g_cg, color="tab:red", label="CG")
        ax.axhline(1.0, color="0.7", lw=0.8)
        ax.set_title(_key_str(key), fontsize=9)
        ax.set_xlabel("r (nm)")
        ax.set_ylabel("g(r)")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _plot_chains(series: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Optional[bytes]:
    if not series:
        return None
    fig, axes = _figure(len(series))
    for ax, (label, (a, b)) in zip(axes, series.items()):
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, 41)
        ax.hist(a.ravel(), bins=edges, density=True, histtype="step", color="k", label="reference")
        ax.hist(b.ravel(), bins=edges, density=True, histtype="step", color="tab:red", label="CG")
        ax.set_xlabel(f"{label} (nm)")
        ax.set_ylabel("density (1/nm)")
    axes[0].legend(fontsize=8)
    return _png(fig)

