"""Configuration: one labelled structure, in OpenMM units.

The single record type every dataset, labeller and trainer in multiscale exchanges.
Units: positions and box in nm, energy in kJ/mol, forces in kJ/mol/nm, virial in kJ/mol
(virial = −∂E/∂ε, the convention of :meth:`EquivariantPotential.compute`), stress in kJ/mol/nm³
(stress = (1/V) ∂E/∂ε = −virial/V), charges in e, dipole moment in e·nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


def _array(value, shape, name: str, dtype=np.float64) -> Optional[np.ndarray]:
    if value is None:
        return None
    arr = np.array(value, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


@dataclass
class Configuration:
    """One structure with optional reference labels.

    Attributes
    ----------
    types: type name per particle (element symbol or bead type).
    positions: (N, 3) nm.
    box: (3, 3) periodic cell, rows a, b, c in nm; None for open boundaries.
    energy: total potential energy, kJ/mol.
    forces: (N, 3) kJ/mol/nm.
    virial: (3, 3) kJ/mol, −∂E/∂ε (periodic cells only).
    charges: (N,) per-particle partial charges, e.
    dipole: (3,) molecular dipole moment in e·nm (open boundaries only; about the origin of the
        positions, so it depends on that origin for a charged structure).
    total_charge: net charge of the structure, e (also the input charge for labellers).
    multiplicity: spin multiplicity 2S+1 (labellers use it; 1 = closed shell).
    info: free-form metadata (source, step, ...); kept through I/O where the format allows.
    """

    types: List[str]
    positions: np.ndarray
    box: Optional[np.ndarray] = None
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    virial: Optional[np.ndarray] = None
    charges: Optional[np.ndarray] = None
    dipole: Optional[np.ndarray] = None
    total_charge: float = 0.0
    multiplicity: int = 1
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.types, (str, bytes)):
            raise ValueError(f"types must be a list with one type name per particle, not the string {self.types!r}")
        self.types = [str(t) for t in self.types]
        n = len(self.types)
        if n == 0:
            raise ValueError("a Configuration needs at least one particle")
        self.positions = _array(self.positions, (n, 3), "positions (nm)")
        self.box = _array(self.box, (3, 3), "box (nm)")
        if self.box is not None and not np.linalg.det(self.box) > 0:
            raise ValueError("box must be a right-handed cell with positive volume (rows a, b, c in nm)")
        self.forces = _array(self.forces, (n, 3), "forces (kJ/mol/nm)")
        self.virial = _array(self.virial, (3, 3), "virial (kJ/mol)")
        self.charges = _array(self.charges, (n,), "charges (e)")
        self.dipole = _array(self.dipole, (3,), "dipole (e·nm)")
        if self.dipole is not None and self.box is not None:
            raise ValueError("a dipole moment is defined for open boundaries only (a periodic cell has none); drop it or the box")
        if self.virial is not None and self.box is None:
            raise ValueError("a virial needs a periodic box")
        if self.energy is not None:
            self.energy = float(self.energy)
            if not np.isfinite(self.energy):
                raise ValueError("energy is NaN or Inf")
        self.total_charge = float(self.total_charge)
        self.multiplicity = int(self.multiplicity)
        if self.multiplicity < 1:
            raise ValueError(f"multiplicity must be >= 1 (2S+1), got {self.multiplicity}")

    @property
    def num_particles(self) -> int:
        return len(self.types)

    @property
    def periodic(self) -> bool:
        return self.box is not None

    @property
    def volume(self) -> Optional[float]:
        """Cell volume in nm³ (None for open boundaries)."""
        return None if self.box is None else float(np.linalg.det(self.box))

    @property
    def stress(self) -> Optional[np.ndarray]:
        """(1/V) ∂E/∂ε in kJ/mol/nm³ (= −virial / V), or None."""
        if self.virial is None:
            return None
        return -self.virial / self.volume

    def with_labels(self, **labels) -> "Configuration":
        """A copy with some fields replaced (e.g. ``energy=..., forces=...``)."""
        data = dict(
            types=list(self.types),
            positions=self.positions.copy(),
            box=None if self.box is None else self.box.copy(),
            energy=self.energy,
            forces=None if self.forces is None else self.forces.copy(),
            virial=None if self.virial is None else self.virial.copy(),
            charges=None if self.charges is None else self.charges.copy(),
            dipole=None if self.dipole is None else self.dipole.copy(),
            total_charge=self.total_charge,
            multiplicity=self.multiplicity,
            info=dict(self.info),
        )
        data.update(labels)
        return Configuration(**data)


def type_counts(configs: Sequence[Configuration], types: Sequence[str]) -> np.ndarray:
    """(n_configs, n_types) matrix of how many particles of each type each configuration has."""
    index = {t: k for k, t in enumerate(types)}
    counts = np.zeros((len(configs), len(types)))
    for row, config in enumerate(configs):
        for t in config.types:
            if t not in index:
                raise ValueError(f"configuration {row} has type {t!r}, not among {list(types)}")
            counts[row, index[t]] += 1
    return counts
