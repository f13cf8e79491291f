"""A picture of a tabulated model: every pair, bond and angle energy and every bending–torsion
series (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multiscale.atomic import atomic_write_bytes
from multiscale.cg.tabulated.tables import TabulatedModel


def plot_tables(model: TabulatedModel, path) -> Path:
    """Four panels: U(r) of the pairs, U(r) of the bonds, U(θ) of the angles (kJ/mol) and
    Σ aₙ cos nφ of the bending–torsion terms; the fitted range solid, the walls dotted; and a
    fifth, U(r) of the chain-pair corrections, when the model has them."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 5 if model.chain_pairs else 4
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6))
    for ax, tables, xlabel in ((axes[0], model.pairs, "r (nm)"), (axes[1], model.bonds, "bond length (nm)"),
                               (axes[2], model.angles, "angle (deg)")):
        for key, table in sorted(tables.items()):
            lo, hi = table.knots[0], table.knots[-1]
            span = hi - lo
            q_in = np.linspace(lo, hi, 300)
            q_out = np.linspace(max(lo - 0.15 * span, 0.0), lo, 30)
            scale = 180 / np.pi if table.kind == "angle" else 1.0
            (line,) = ax.plot(q_in * scale, table.energy_at(q_in), label="-".join(key))
            ax.plot(q_out * scale, table.energy_at(q_out), ":", color=line.get_color())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("U (kJ/mol)")
        ax.legend(fontsize=7)
    phi = np.linspace(-np.pi, np.pi, 361)
    for key, a in sorted(model.dihedrals.items()):
        axes[3].plot(np.degrees(phi), sum(a[n] * np.cos(n * phi) for n in range(len(a))), label="-".join(key))
    axes[3].set_xlabel("dihedral φ (deg)")
    axes[3].set_ylabel("Σ aₙ cos nφ (kJ/mol)")
    if model.dihedrals:
        axes[3].legend(fontsize=7)
    axes[0].set_title("pairs (0 at the cutoff)")
    axes[1].set_title("bonds")
    axes[2].set_title("angles")
    axes[3].set_title("bending–torsion (× sin³θ₁ sin³θ₂)")
    if model.chain_pairs:
        for (bonds_apart, a, b), table in sorted(model.chain_pairs.items()):
            r = np.linspace(table.knots[0], table.knots[-1], 300)
            axes[4].plot(r, table.energy_at(r), label=f"1-{bonds_apart + 1} {a}-{b}")
        axes[4].set_xlabel("distance along the chain's pairs (nm)")
        axes[4].set_ylabel("U (kJ/mol)")
        axes[4].legend(fontsize=7)
        axes[4].set_title("chain pairs (refined)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
