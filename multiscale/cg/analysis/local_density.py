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
    of κ. ``rho0``: one target per member (the same order). :func:`virial_neutral_shifts` sets
    one shift per group of members against several strains at once."""
    members = np.asarray(members, dtype=np.int64)
    return virial_neutral_shifts(traj, members, rho0, np.zeros(members.size, dtype=np.int64), inner_nm, outer_nm,
                                 strains=(axes,))[0]


def virial_neutral_shifts(traj: md.Trajectory, members: Sequence[int], rho0: Sequence[float], groups: Sequence,
                          inner_nm: float, outer_nm: float,
                          strains: Sequence[Sequence[int]] = ((0, 1), (2,))) -> dict:
    """One shift δ_g of the targets per group of members (``groups``: one label per member) for
    which a local-density spring U = κ Σ_i (ρ_i − ρ0_i − δ_g(i))² exerts no mean virial along
    each strain of ``strains`` on the frames of ``traj``: for each strain, the mean of dU/dε,
    every position scaled by (1 + ε) along its axes, is 0. As many strains as groups (a square
    linear system, since dU/dε is linear in the shifts); returns {label: δ}.

    Why two: a solvent-free bilayer's thickness is as free as its area (no solvent holds the box
    height), so a spring that adds no lateral virial (:func:`virial_neutral_shift`) can still
    squeeze the bilayer along its normal. On the reference frames of the quick DMPC bilayer, the
    tail spring with the lateral shift alone (+0.57 neighbours) kept a normal dU/dε of
    +720..+1,060 kJ/mol per frame at κ = 0.5 kJ/mol, and whole runs came out 1.8-10.3 % thin.
    Shifts per tail type (C, CT) with ((0, 1), (2,)) zero both."""
    members = np.asarray(members, dtype=np.int64)
    rho0 = np.asarray(rho0, dtype=float)
    groups = np.asarray(groups)
    if rho0.shape != members.shape:
        raise ValueError(f"rho0 needs one target per member ({members.size}), got {rho0.shape}")
    if groups.shape != members.shape:
        raise ValueError(f"groups needs one label per member ({members.size}), got {groups.shape}")
    if traj.unitcell_vectors is None:
        raise ValueError("the virial needs periodic cells (the trajectory has none)")
    strains = [list(axes) for axes in strains]
    for axes in strains:
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct Cartesian axes among 0, 1, 2, got {axes!r}")
    labels = list(dict.fromkeys(groups.tolist()))  # in first-seen order
    if len(strains) != len(labels):
        raise ValueError(f"{len(labels)} groups need as many strains to zero, got {len(strains)}: one shift per "
                         "group is set by one virial condition per strain")
    masks = [groups == g for g in labels]
    # dU/dε = 2κ Σ_i (ρ_i − ρ0_i − δ_g(i)) g_i, g_i = dρ_i/dε: zero for each strain k when
    # Σ_g δ_g G_kg = b_k, G_kg = Σ_{i in g} g_i and b_k = Σ_i (ρ_i − ρ0_i) g_i (over all frames)
    G = np.zeros((len(strains), len(labels)))
    b = np.zeros(len(strains))
    for d in _separations(traj, members):
        r = np.linalg.norm(d, axis=-1)
        np.fill_diagonal(r, outer_nm + 1.0)  # no bead is its own neighbour
        rho = local_density_weight(r, inner_nm, outer_nm).sum(axis=1)  # as local_densities
        slope = local_density_weight_derivative(r, inner_nm, outer_nm) / r
        for k, axes in enumerate(strains):
            # dr_ij/dε = Σ_axes d_a² / r; dρ_i/dε = Σ_j w'(r_ij) dr_ij/dε
            g = (slope * (d[..., axes] ** 2).sum(-1)).sum(axis=1)
            b[k] += float(((rho - rho0) * g).sum())
            G[k] += [float(g[m].sum()) for m in masks]
    if not np.any(G):
        raise ValueError("no member pair lies in the weight's taper in any frame: the virial cannot be set")
    if np.linalg.cond(G) > 1e8:
        raise ValueError("the groups' virials are not independent along these strains (a singular system): "
                         "merge the groups or choose other strains")
    return dict(zip(labels, (float(x) for x in np.linalg.solve(G, b))))
