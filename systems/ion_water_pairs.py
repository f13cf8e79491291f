"""Pairs of charged and polar molecules at separations out past a short-range cutoff:
Na⁺(H₂O)···H₂O, H₂O···H₂O and Na⁺(H₂O)···Na⁺(H₂O), the test bed for learning long-range
electrostatics.

Every pair is like-charged or ion–neutral on purpose: an oppositely charged pair (Na⁺···Cl⁻) in
vacuum has neutral atoms as its ground state at large separation (the ionisation energy of Na,
5.1 eV, exceeds the electron affinity of Cl, 3.6 eV), so a semi-empirical reference would move a
fractional electron between the fragments rather than follow Coulomb's law. A bare Na⁺ next to a
distant water is no better in GFN2-xTB: its SCF fails to converge beyond ~0.6 nm at 300 K
(delocalisation error), hence a hydrated ion, Na⁺(H₂O), whose SCF converges (it still moves
0.03–0.07 e onto a water 0.5–1.5 nm away).

Positions in nm. Each configuration records ``info["kind"]`` and ``info["separation_nm"]``: the
distance between the two fragments' reference atoms (Na or the water's O).
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from multiscale.data.configuration import Configuration

#: gas-phase water geometry (O–H in nm, H–O–H in degrees) and the perturbations applied to it
WATER_OH_NM = 0.0957
WATER_ANGLE_DEG = 104.5
OH_JITTER_NM = 0.003
ANGLE_JITTER_DEG = 5.0
#: Na⁺–O distance of the water bound to each ion in Na⁺(H₂O) (nm; the first-shell distance)
NA_O_NM = 0.23
#: closest approach between atoms of different fragments (nm): below this a random orientation is redrawn
MIN_CONTACT_NM = 0.17

#: kind → (fragment A, fragment B, total charge in e, smallest separation in nm)
KINDS = {
    "Na+(H2O) H2O": ("Na+(H2O)", "H2O", 1.0, 0.4),
    "H2O H2O": ("H2O", "H2O", 0.0, 0.26),
    "Na+(H2O) Na+(H2O)": ("Na+(H2O)", "Na+(H2O)", 2.0, 0.45),
}


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _water(rng: np.random.Generator) -> np.ndarray:
    """O, H, H of a slightly distorted water, O at the origin, in a random orientation (nm)."""
    r1, r2 = WATER_OH_NM + OH_JITTER_NM * rng.normal(size=2)
    angle = np.radians(WATER_ANGLE_DEG + ANGLE_JITTER_DEG * rng.normal())
    local = np.array([[0.0, 0.0, 0.0], [r1, 0.0, 0.0], [r2 * np.cos(angle), r2 * np.sin(angle), 0.0]])
    return local @ _rotation(rng).T


def _fragment(name: str, rng: np.random.Generator):
    """(types, positions with the reference atom at the origin) of one fragment."""
    if name == "Na+":
        return ["Na"], np.zeros((1, 3))
    if name == "H2O":
        return ["O", "H", "H"], _water(rng)
    if name == "Na+(H2O)":
        water = _water(rng)
        # the O faces the ion, the H atoms point away: O on a random direction at NA_O_NM, the water's
        # bisector along that direction
        bisector = (water[1] + water[2]) / 2.0
        bisector /= np.linalg.norm(bisector)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        # rotate the water so that its bisector points along +direction (away from the ion)
        v = np.cross(bisector, direction)
        c = float(bisector @ direction)
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        turn = np.eye(3) + vx + vx @ vx / (1.0 + c) if c > -0.999 else -np.eye(3)
        water = water @ turn.T + NA_O_NM * direction
        return ["Na", "O", "H", "H"], np.vstack([np.zeros((1, 3)), water])
    raise ValueError(f"unknown fragment {name!r}")


def pair_configurations(kind: str, separations_nm: Sequence[float], seed: int = 0) -> List[Configuration]:
    """One unlabelled configuration of ``kind`` (a key of :data:`KINDS`) per separation (nm),
    fragments in random orientations, with the pair's total charge set."""
    if kind not in KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; choose one of {sorted(KINDS)}")
    first, second, charge, closest = KINDS[kind]
    rng = np.random.default_rng(seed)
    out = []
    for d in separations_nm:
        d = float(d)
        if d < closest:
            raise ValueError(f"{kind}: separation {d} nm is below the closest approach {closest} nm")
        if d > 10.0:
            raise ValueError(f"{kind}: separation {d} nm is implausibly large; separations are in nm")
        while True:
            types_a, pos_a = _fragment(first, rng)
            types_b, pos_b = _fragment(second, rng)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            pos_b = pos_b + d * direction
            gaps = np.linalg.norm(pos_a[:, None, :] - pos_b[None, :, :], axis=-1)
            if gaps.min() >= MIN_CONTACT_NM:
                break
        out.append(Configuration(types_a + types_b, np.vstack([pos_a, pos_b]), total_charge=charge,
                                 info={"kind": kind, "separation_nm": d}))
    return out


def pair_dataset(per_kind: int, max_separation_nm: float = 1.6, seed: int = 0) -> List[Configuration]:
    """``per_kind`` configurations of every kind, separations uniform between the kind's closest
    approach and ``max_separation_nm``."""
    rng = np.random.default_rng(seed)
    out: List[Configuration] = []
    for k, kind in enumerate(sorted(KINDS)):
        closest = KINDS[kind][3]
        separations = rng.uniform(closest, max_separation_nm, per_kind)
        out += pair_configurations(kind, separations, seed=seed * 100 + k)
    return out
