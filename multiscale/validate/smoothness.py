"""Smoothness at the cutoff: energy and force along a path that takes one particle across it.

For each cutoff (the model's, and the System's nonbonded ones) the pair (i, j) whose distance is
nearest the cutoff is chosen, and i is moved along the j→i direction so that r_ij runs from
r_c − w to r_c + w (w = ``path_half_width_nm``, 0.05 nm: short enough not to run i into a
third particle). Along the path dE/ds = −F_i·u, so over a segment the trapezoid rule predicts
ΔE from the forces. A smooth energy leaves a mismatch that shrinks 8× each time the segment is
halved; a jump does not shrink. The worst segment is bisected ``path_refinements`` times; what
is left is the jump. Force jumps are found the same way (a smooth force changes 2× less per
halving; a jump not at all). Evaluated in double precision.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from multiscale.neighbors import pairs_within
from multiscale.units import kT
from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target, minimum_image_of

#: a smooth function's change shrinks with the segment; above this ratio per halving it is a jump
JUMP_RATIO = 0.75


def path_pair(target: Target, cutoff: float) -> Optional[Tuple[int, int, float]]:
    """(i, j, r_ij) of the massive pair whose distance is nearest ``cutoff`` (None when no pair
    comes within cutoff + 0.3 nm)."""
    reach = cutoff + 0.3
    if target.box is not None:
        reach = min(reach, 0.499 * _narrowest_width(target.box))
    i, j, r = pairs_within(target.positions, target.box, reach)
    massive = target.masses > 0
    keep = massive[i] & massive[j] & (i < j)
    if not keep.any():
        return None
    i, j, r = i[keep], j[keep], r[keep]
    k = int(np.argmin(np.abs(r - cutoff)))
    return int(i[k]), int(j[k]), float(r[k])


def _narrowest_width(box: np.ndarray) -> float:
    volume = abs(np.linalg.det(box))
    a, b, c = box
    return float(volume / max(np.linalg.norm(np.cross(b, c)), np.linalg.norm(np.cross(c, a)), np.linalg.norm(np.cross(a, b))))


class CutoffPath:
    """Energies and forces along r_ij = s for particle i moved along u (the j→i direction)."""

    def __init__(self, evaluator, target: Target, i: int, j: int, r0: float):
        self.evaluator, self.target, self.i, self.j, self.r0 = evaluator, target, i, j, r0
        d = minimum_image_of(target.positions[i] - target.positions[j], target.box)
        self.u = d / np.linalg.norm(d)

    def at(self, s: float) -> Tuple[float, float]:
        """(E kJ/mol, F_i·u kJ/mol/nm) at r_ij = s."""
        positions = self.target.positions.copy()
        positions[self.i] = positions[self.i] + (s - self.r0) * self.u
        energy, forces = self.evaluator.energy_forces(positions, self.target.box)
        return energy, float(forces[self.i] @ self.u)


def _energy_mismatch(s0, s1, e0, e1, g0, g1) -> float:
    return abs((e1 - e0) + 0.5 * (g0 + g1) * (s1 - s0))


def _refine(path: CutoffPath, s0, s1, p0, p1, measure, refinements: int) -> Tuple[List[float], float, float]:
    """Bisect [s0, s1] ``refinements`` times, keeping the half where ``measure`` is larger.
    Returns (measure at each level, s at the middle of the last segment, its width)."""
    history = [measure(s0, s1, p0, p1)]
    for _ in range(refinements):
        sm = 0.5 * (s0 + s1)
        pm = path.at(sm)
        left, right = measure(s0, sm, p0, pm), measure(sm, s1, pm, p1)
        if left >= right:
            s1, p1 = sm, pm
            history.append(left)
        else:
            s0, p0 = sm, pm
            history.append(right)
    return history, 0.5 * (s0 + s1), s1 - s0


def _is_jump(history: List[float], threshold: float) -> bool:
    if history[-1] <= threshold:
        return False
    return len(history) < 2 or history[-1] > JUMP_RATIO * history[-2]


def cutoff_path(target: Target, cutoff: float, settings: ValidationSettings) -> Optional[Dict]:
    """The scan and refinement along one cutoff path (None when no pair is near enough)."""
    pair = path_pair(target, cutoff)
    if pair is None:
        return None
    i, j, r0 = pair
    path = CutoffPath(target.precise, target, i, j, r0)
    w = settings.path_half_width_nm
    s = np.linspace(max(cutoff - w, 0.5 * cutoff), cutoff + w, settings.path_points)
    values = [path.at(float(x)) for x in s]
    energy = np.array([v[0] for v in values])
    force = np.array([v[1] for v in values])
    eps = target.precise.eps
    noise_e = 10 * eps * (float(np.max(np.abs(energy))) + target.num_particles)
    noise_f = 10 * eps * (float(np.max(np.abs(force))) + 1.0)
    energy_threshold = settings.energy_jump_kT * kT(settings.temperature_K) + noise_e
    force_threshold = settings.force_jump_kj_mol_nm + noise_f

    mismatch = np.abs(np.diff(energy) + 0.5 * (force[1:] + force[:-1]) * np.diff(s))
    k = int(np.argmax(mismatch)) if np.all(np.isfinite(mismatch)) else int(np.argmax(~np.isfinite(mismatch)))
    e_hist, e_at, _ = _refine(path, s[k], s[k + 1], values[k], values[k + 1],
                              lambda a, b, p, q: _energy_mismatch(a, b, p[0], q[0], p[1], q[1]), settings.path_refinements)
    change = np.abs(np.diff(force))
    m = int(np.argmax(change)) if np.all(np.isfinite(change)) else int(np.argmax(~np.isfinite(change)))
    f_hist, f_at, _ = _refine(path, s[m], s[m + 1], values[m], values[m + 1], lambda a, b, p, q: abs(q[1] - p[1]),
                              settings.path_refinements)
    return {
        "cutoff_nm": cutoff, "i": i, "j": j, "r": s.tolist(), "energy": energy.tolist(), "force": force.tolist(),
        "energy_jump_raw": float(e_hist[-1]), "energy_history": [float(x) for x in e_hist], "energy_at": float(e_at),
        "energy_threshold": float(energy_threshold), "energy_is_jump": _is_jump(e_hist, energy_threshold),
        "force_jump_raw": float(f_hist[-1]), "force_history": [float(x) for x in f_hist], "force_at": float(f_at),
        "force_threshold": float(force_threshold), "force_is_jump": _is_jump(f_hist, force_threshold),
    }


def smoothness_checks(target: Target, settings: ValidationSettings) -> Tuple[List[Check], List[Dict]]:
    """The ``energy_continuity`` and ``force_continuity`` checks (worst over the cutoffs) and the
    path data for the plot."""
    if not target.cutoffs:
        why = "no cutoff (open boundaries without a cutoff force, and no model)"
        return [Check("energy_continuity", "smoothness", None, None, None, "kJ/mol", f"not applicable: {why}"),
                Check("force_continuity", "smoothness", None, None, None, "kJ/mol/nm", f"not applicable: {why}")], []
    paths = [p for p in (cutoff_path(target, c, settings) for c in target.cutoffs) if p is not None]
    if not paths:
        why = f"no pair of particles within 0.3 nm of the cutoff(s) {target.cutoffs} nm"
        return [Check("energy_continuity", "smoothness", None, None, None, "kJ/mol", f"not applicable: {why}"),
                Check("force_continuity", "smoothness", None, None, None, "kJ/mol/nm", f"not applicable: {why}")], []
    checks = []
    cutoff_list = ", ".join(f"{p['cutoff_nm']:g}" for p in paths)
    for kind, unit_name in (("energy", "kJ/mol"), ("force", "kJ/mol/nm")):
        jumps = [p for p in paths if p[f"{kind}_is_jump"]]
        worst = max(jumps or paths, key=lambda p: p[f"{kind}_jump_raw"] / p[f"{kind}_threshold"])
        passed = not jumps
        value = worst[f"{kind}_jump_raw"] if jumps else 0.0
        where = (f"particle {worst['i']} moved from particle {worst['j']} across the {worst['cutoff_nm']:g} nm cutoff; "
                 f"at r = {worst[f'{kind}_at']:.5f} nm")
        if passed:
            detail = (f"no {kind} jump along {len(paths)} cutoff path(s) ({cutoff_list} nm); "
                      f"largest residual {worst[f'{kind}_jump_raw']:.2g} {unit_name} after {settings.path_refinements} bisections "
                      f"(shrinking: {', '.join(f'{x:.2g}' for x in worst[f'{kind}_history'])})")
        else:
            detail = (f"{kind} jumps by {value:.3g} {unit_name}: {where} (it does not shrink when the step is halved: "
                      f"{', '.join(f'{x:.2g}' for x in worst[f'{kind}_history'])}). "
                      + ("The energy is cut off without a smooth envelope or switching function: add one, or a "
                         "switching distance (NonbondedForce.setUseSwitchingFunction)" if kind == "energy" else
                         "The force is discontinuous at the cutoff (a shifted energy without a switch): use a switching function"))
        checks.append(Check(f"{kind}_continuity", "smoothness", value, worst[f"{kind}_threshold"], passed, unit_name, detail))
    return checks, paths
