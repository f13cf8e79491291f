"""Local density of beads: each bead's number of neighbours of chosen types, counted with a
smooth weight (1 inside ``inner_nm``, a cos² taper to 0 at ``outer_nm``), minimum image.

The quantity a local-density potential acts on (:mod:`multiscale.openmm.local_density`, which
computes the same weight inside OpenMM); its reference means set that potential's targets, and
:func:`virial_neutral_shift` the shift of those targets at which the potential adds no pressure
on the reference frames. Units: nm.
"""

from __future__ import annotations

from typing import Sequence

import mdtraj as md
import numpy as np

from multiscale.cg.geometry import minimum_image


def local_density_weight(r, inner_nm: float, outer_nm: float) -> np.ndarray:
    """w(r): 1 for r ≤ inner, ½ (1 + cos(π (r − inner) / (outer − inner))) up to outer, 0 beyond
    (continuous with a continuous derivative at both ends)."""
    if not 0.0 < inner_nm < outer_nm:
        raise ValueError(f"the local-density weight needs 0 < inner_nm < outer_nm, got {inner_nm!r}, {outer_nm!r} (nm)")
    r = np.asarray(r, dtype=float)
    taper = 0.5 * (1.0 + np.cos(np.pi * (r - inner_nm) / (outer_nm - inner_nm)))
    return np.where(r <= inner_nm, 1.0, np.where(r < outer_nm, taper, 0.0))


def local_densities(traj: md.Trajectory, members: Sequence[int], inner_nm: float, outer_nm: float) -> np.ndarray:
    """(T, len(members)) ρ_i = Σ_{j ∈ members, j ≠ i} w(|r_ij|) for each bead i of ``members``
    (bead indices), minimum image in the trajectory's cells (none: open boundaries)."""
    members = np.asarray(members, dtype=np.int64)
    if members.size < 2:
        raise ValueError("a local density needs at least 2 member beads")
    out = np.empty((traj.n_frames, members.size))
    for t, d in enumerate(_separations(traj, members)):
        w = local_density_weight(np.linalg.norm(d, axis=-1), inner_nm, outer_nm)
        np.fill_diagonal(w, 0.0)
        out[t] = w.sum(axis=1)
    return out


def _separations(traj: md.Trajectory, members: np.ndarray):
    """Per frame, the (m, m, 3) minimum-image separations r_i − r_j of the ``members`` (nm)."""
    xyz = traj.xyz[:, members].astype(np.float64)
    cells = None if traj.unitcell_vectors is None else np.asarray(traj.unitcell_vectors, dtype=np.float64)
    for t in range(traj.n_frames):
        d = (xyz[t][:, None] - xyz[t][None]).reshape(1, -1, 3)
        yield minimum_image(d, None if cells is None else cells[t:t + 1]).reshape(members.size, members.size, 3)


def local_density_weight_derivative(r, inner_nm: float, outer_nm: float) -> np.ndarray:
    """dw/dr of :func:`local_density_weight` (nm⁻¹): 0 inside ``inner_nm`` and beyond ``outer_nm``."""
    if not 0.0 < inner_nm < outer_nm:
        raise ValueError(f"the local-density weight needs 0 < inner_nm < outer_nm, got {inner_nm!r}, {outer_nm!r} (nm)")
    r = np.asarray(r, dtype=float)
    width = outer_nm - inner_nm
    slope = -0.5 * np.pi / width * np.sin(np.pi * (r - inner_nm) / width)
    return np.where((r > inner_nm) & (r < outer_nm), slope, 0.0)


def virial_neutral_shift(traj: md.Trajectory, members: Sequence[int], rho0: Sequence[float], inner_nm: float,
                         outer_nm: float, axes: Sequence[int] = (0, 1)) -> float:
    """The shift δ (neighbours) of the targets for which a local-density spring
    U = κ Σ_i (ρ_i − ρ0_i − δ)² exerts no mean virial along ``axes`` on the frames of ``traj``
    (periodic cells needed): the mean of dU/dε, every position scaled by (1 + ε) along ``axes``
    (the atomic virial, as the tabulated fit's pressure constraint), is 0.

    Why: a spring whose targets are the frames' mean densities still pushes. Beads with more
    neighbours than their type's mean also have more of them in the weight's taper, so expanding
    lowers U: on a solvent-free bilayer's reference frames the tail spring at κ = 0.5 kJ/mol pushed
    the area outward, and two models held fluid by it came out 3.5-7.6 % too large. With δ it adds no
    lateral pressure where the reference is, and keeps only its restoring part. δ is independent
    of κ. ``rho0``: one target per member (the same order)."""
    members = np.asarray(members, dtype=np.int64)
    rho0 = np.asarray(rho0, dtype=float)
    if rho0.shape != members.shape:
        raise ValueError(f"rho0 needs one target per member ({members.size}), got {rho0.shape}")
    if traj.unitcell_vectors is None:
        raise ValueError("the virial needs periodic cells (the trajectory has none)")
    axes = list(axes)
    if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct Cartesian axes among 0, 1, 2, got {axes!r}")
    weighted = total = 0.0
    for d in _separations(traj, members):
        r = np.linalg.norm(d, axis=-1)
        np.fill_diagonal(r, outer_nm + 1.0)  # no bead is its own neighbour
        rho = local_density_weight(r, inner_nm, outer_nm).sum(axis=1)  # as local_densities
        # dr_ij/dε = Σ_axes d_a² / r; dρ_i/dε = Σ_j w'(r_ij) dr_ij/dε
        g = (local_density_weight_derivative(r, inner_nm, outer_nm) * (d[..., axes] ** 2).sum(-1) / r).sum(axis=1)
        weighted += float(((rho - rho0) * g).sum())
        total += float(g.sum())
    if total == 0.0:
        raise ValueError("no member pair lies in the weight's taper in any frame: the virial cannot be set")
    return weighted / total
