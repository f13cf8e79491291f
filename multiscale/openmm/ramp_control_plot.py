"""A picture of a ramp controller's run (:func:`~multiscale.openmm.ramp_control.control_ramp`):
the measured value against its target, and the ramp, over time (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

from multiscale.atomic import atomic_write_bytes


def plot_control(trace: Sequence[Dict[str, float]], target: float, path, value_label: str = "thickness (nm)",
                 ramp_label: str = "head–tail ramp A (kJ/mol)", settled: float = 0.15) -> Path:
    """Two panels over time (ps): the value with its target, and A; the last ``settled`` fraction,
    over which A is averaged, shaded."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["time_ps"] for row in trace]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(t, [row["value"] for row in trace], lw=0.8, label="measured")
    top.axhline(target, color="k", ls="--", lw=1, label="target (reference)")
    top.set_ylabel(value_label)
    top.legend(frameon=False)
    bottom.plot(t, [row["A"] for row in trace], color="C1")
    bottom.set_ylabel(ramp_label)
    bottom.set_xlabel("time (ps)")
    for ax in (top, bottom):
        ax.axvspan(t[len(t) - max(int(round(settled * len(t))), 1)], t[-1], color="0.9", zorder=0)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
