"""Diagnostic plot of the prior fits: Boltzmann-inverted data against each fitted prior (PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import numpy as np

from multiscale.units import kT as _kT
from multiscale.cg.priors.config import PriorConfig
from multiscale.cg.priors.fits import _harmonic_range, boltzmann_inversion
from multiscale.cg.priors.records import _UNITS, Priors
from multiscale.cg.priors.samples import PriorSamples

# ----------------------------------------------------------------------------------------------
# diagnostics
# ----------------------------------------------------------------------------------------------


def plot_priors(
    priors: Priors, data: PriorSamples, path: Union[str, Path], config: Optional[PriorConfig] = None
) -> Path:
    """Write a PNG grid to ``path``: per type tuple, the Jacobian-corrected Boltzmann-inverted free
    energy of ``data`` (kJ/mol, points) with the fitted prior over it (line).

    Bonds and angles: −kBT ln[P/J] against ½k(x − x0)² (both 0 at their minimum). Dihedrals:
    −kBT ln P(φ) against the torsion series, aligned by their count-weighted means. Repulsion:
    −kBT ln[P_nn(r)/r²] of the nearest-neighbour contact distances against the prior, σ dashed.
    Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = config or PriorConfig()
    temperature = priors.temperature_K
    kbt = _kT(temperature)
    panels = []
    for key, p in sorted(priors.bonds.items()):
        panels.append(("bond", key, p, data.bonds.get(key)))
    for key, p in sorted(priors.angles.items()):
        panels.append(("angle", key, p, data.angles.get(key)))
    for key, p in sorted(priors.dihedrals.items()):
        panels.append(("dihedral", key, p, data.dihedrals.get(key)))
    for key, p in sorted(priors.repulsive.items()):
        panels.append(("contact", key, p, data.contacts.get(key)))
    if not panels:
        raise ValueError("no priors to plot; fit some first")
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (kind, key, prior, values) in zip(axes.ravel(), panels):
        title = f"{kind} {'-'.join(key)}"
        if kind in ("bond", "angle"):
            unit = _UNITS[kind][0]
            if values is not None and np.size(values) > 1 and np.ptp(values) > 0:
                lo, hi, _ = _harmonic_range(np.asarray(values, float), kind, config.tail_quantile)
                inv = boltzmann_inversion(values, kind, temperature, config.bins, (lo, hi))
                ax.plot(inv.centers, inv.free_energy, ".", ms=3, label="BI data")
                grid = np.linspace(lo, hi, 200)
            else:
                x0 = prior.r0 if kind == "bond" else prior.theta0
                width = 3.0 * math.sqrt(kbt / prior.k)
                grid = np.linspace(x0 - width, x0 + width, 200)
            ax.plot(grid, prior.energy(grid), "-", label="prior")
            x0 = prior.r0 if kind == "bond" else prior.theta0
            title += f"\nk={prior.k:.4g}, x0={x0:.4g}"
            ax.set_xlabel(f"{'r' if kind == 'bond' else 'θ'} ({unit})")
        elif kind == "dihedral":
            grid = np.linspace(-math.pi, math.pi, 361)
            curve = prior.energy(grid)
            if values is not None and np.size(values) > 1:
                inv = boltzmann_inversion(values, "dihedral", temperature, config.dihedral_bins, (-math.pi, math.pi))
                occ = inv.counts > 0
                shift = np.average(inv.free_energy[occ] - prior.energy(inv.centers[occ]), weights=inv.counts[occ])
                ax.plot(inv.centers, inv.free_energy, ".", ms=3, label="BI data")
                curve = curve + shift
            ax.plot(grid, curve, "-", label="prior")
            ax.set_xlabel("φ (rad)")
        else:
            cutoff = priors.cutoff_nm
            hi = cutoff
            if values is not None and np.size(values) > 1 and np.ptp(values) > 0:
                hi = float(np.max(values))
                inv = boltzmann_inversion(values, "contact", temperature, config.bins, (float(np.min(values)), hi))
                ax.plot(inv.centers, inv.free_energy, ".", ms=3, label="BI contacts")
            grid = np.linspace(0.8 * prior.sigma, hi, 200)
            ax.plot(grid, prior.energy(grid, priors.repulsive_form, cutoff), "-", label="prior")
            ax.axvline(prior.sigma, ls="--", lw=0.8, color="gray")
            ax.set_ylim(-0.5 * kbt, 10.0 * kbt)
            title += f"\nσ={prior.sigma:.4g} nm"
            ax.set_xlabel("r (nm)")
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("kJ/mol")
        ax.legend(fontsize=6)
    fig.suptitle(f"CG priors at {temperature:g} K (kBT = {kbt:.3g} kJ/mol)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
