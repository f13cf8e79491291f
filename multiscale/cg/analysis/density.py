"""Mass density of every frame (g/cm³), with the named unit constants it needs."""

from __future__ import annotations

from typing import Optional, Sequence

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import Masses, _check_unitcell, _masses


#: Avogadro constant in mol⁻¹: exact by definition in the SI since 20 May 2019 (26th CGPM;
#: CODATA 2018 value, the one OpenMM's ``openmm.unit.AVOGADRO_CONSTANT_NA`` uses).
AVOGADRO_CONSTANT_PER_MOL = 6.02214076e23
#: 1 amu (dalton) in g, taken as (1 g/mol) / N_A. Since 2019 the molar mass constant is
#: M_u = 0.99999999965(30) g/mol rather than exactly 1 g/mol, so this differs from the CODATA 2018
#: dalton (1.66053906660e-24 g) by 3.5e-10 relative, far below any simulated density's precision.
AMU_TO_G = 1.0 / AVOGADRO_CONSTANT_PER_MOL
#: 1 nm³ in cm³ (1 nm = 1e-7 cm).
NM3_TO_CM3 = 1e-21
#: 1 amu/nm³ in g/cm³ (= 1.66053906717e-3).
AMU_PER_NM3_TO_G_PER_CM3 = AMU_TO_G / NM3_TO_CM3


def density(traj: md.Trajectory, masses_amu: Masses, *, types: Optional[Sequence[str]] = None) -> np.ndarray:
    """Mass density (g/cm³) of every frame, shape (n_frames,): total bead mass (amu) over the
    unit-cell volume (nm³), times :data:`AMU_PER_NM3_TO_G_PER_CM3`."""
    _check_unitcell(traj, "density")
    total = _masses(traj.topology, masses_amu, types).sum()
    return total / np.asarray(traj.unitcell_volumes, dtype=np.float64) * AMU_PER_NM3_TO_G_PER_CM3

