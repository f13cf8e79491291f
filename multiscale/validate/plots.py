"""The validation figure: energy and force along the cutoff path(s), and the NVE energy trace."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np


def plot_validation(paths: List[Dict], nve: Dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multiscale.atomic import atomic_write_bytes
    import io

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for p in paths:
        r = np.asarray(p["r"])
        energy = np.asarray(p["energy"])
        label = f"r_c = {p['cutoff_nm']:g} nm (particles {p['i']}, {p['j']})"
        axes[0].plot(r, energy - energy[-1], label=label)
        axes[1].plot(r, p["force"], label=label)
        for ax in axes[:2]:
            ax.axvline(p["cutoff_nm"], color="grey", lw=0.8, ls="--")
    axes[0].set(xlabel="r_ij (nm)", ylabel="E − E(end) (kJ/mol)", title="energy along the cutoff path")
    axes[1].set(xlabel="r_ij (nm)", ylabel="F_i · u (kJ/mol/nm)", title="force along the path")
    if paths:
        axes[0].legend(fontsize=7)
    if nve and len(nve.get("time_ps", [])):
        t = np.asarray(nve["time_ps"])
        total = np.asarray(nve["total"])
        axes[2].plot(t, total - total[0], label="total")
        axes[2].plot(t, np.asarray(nve["potential"]) - nve["potential"][0], label="potential", alpha=0.5)
        axes[2].set(xlabel="time (ps)", ylabel="E − E(0) (kJ/mol)",
                    title=f"NVE at {nve['timestep_fs']:.3g} fs")
        axes[2].legend(fontsize=7)
    else:
        axes[2].set_title("NVE: not run")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
