"""A picture of a ramp controller's run (:func:`~multiscale.openmm.ramp_control.control_ramps`):
each controlled value against its target, and its ramp, over time (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

from multiscale.atomic import atomic_write_bytes


def plot_controls(panels: Sequence[Dict], path, settled: float = 0.15) -> Path:
    """One column per channel, two panels each over time (ps): the value with its target, and the
    ramp A; the last ``settled`` fraction, over which A is averaged, shaded. ``panels``: dicts
    with "trace" ([{"time_ps", "A", "value"}]), "target", "value_label" and "ramp_label"."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(6.5 * len(panels), 5), sharex=True, squeeze=False)
    for column, panel in enumerate(panels):
        trace = panel["trace"]
        t = [row["time_ps"] for row in trace]
        top, bottom = axes[0, column], axes[1, column]
        top.plot(t, [row["value"] for row in trace], lw=0.8, label="measured")
        top.axhline(panel["target"], color="k", ls="--", lw=1, label="target (reference)")
        top.set_ylabel(panel["value_label"])
        top.legend(frameon=False)
        bottom.plot(t, [row["A"] for row in trace], color="C1")
        bottom.set_ylabel(panel["ramp_label"])
        bottom.set_xlabel("time (ps)")
        for ax in (top, bottom):
            ax.axvspan(t[len(t) - max(int(round(settled * len(t))), 1)], t[-1], color="0.9", zorder=0)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_control(trace: Sequence[Dict[str, float]], target: float, path, value_label: str = "thickness (nm)",
                 ramp_label: str = "head–tail ramp A (kJ/mol)", settled: float = 0.15) -> Path:
    """:func:`plot_controls` of one channel."""
    return plot_controls([{"trace": trace, "target": target, "value_label": value_label, "ramp_label": ramp_label}],
                         path, settled)
