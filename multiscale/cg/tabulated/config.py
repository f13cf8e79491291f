"""Options of the multiscale coarse-graining (MS-CG) fit of tabulated potentials
(:class:`TabulatedConfig`; YAML section ``tabulated``). Units: nm, rad, K, bar."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from multiscale.config import YamlConfig
from multiscale.cg.priors.records import _EXCLUSIONS


@dataclass
class TabulatedConfig(YamlConfig):
    """How the tabulated (MS-CG) model is fitted.

    Attributes
    ----------
    cutoff_nm: range of the pair tables, nm (the pair force is 0 there and beyond).
    pair_spacing_nm, bond_spacing_nm, angle_spacing_rad: knot spacing of the piecewise-linear
        force bases (linear B-splines) of pairs, bonds and angles.
    dihedral_order: the combined bending–torsion term (Bulacu et al. 2013) is
        sin³θ₁ sin³θ₂ Σ_{n=0..order} aₙ cos nφ; 0 turns dihedrals off (-1 too).
    exclusion: bonded separations ("1-2", "1-3", "1-4") left out of the pair tables.
    smoothness: weight of the second-difference penalty on each table, relative to that block of
        the normal matrix (it fills knots with few samples smoothly; 0 disables it).
    min_pair_count: the pair table starts this many samples into the closest contacts of its
        type pair (below: a repulsive wall).
    wall_kT_nm: the walls beyond the sampled range rise by 1 kBT over this distance, quadratically
        (stiffness kBT / wall_kT_nm²); bond and angle walls use it in nm and rad.
    pressure_bar: when set, the fit is constrained so that the model's mean virial pressure on
        the reference configurations equals this pressure (Das & Andersen 2010); None: free.
    bonded: "force_matching" (bond and angle tables fitted with the pairs) or "boltzmann" (bond
        and angle tables by Boltzmann inversion of the mapped distributions, U = −kBT ln[P/J],
        their forces subtracted before the pairs and bending–torsion terms are fitted: the hybrid
        scheme for noisy data, where the fitted bonded tables would carry the noise).
    pressure_axes: "xyz" (the pressure, for a bulk phase) or "xy" (the lateral pressure
        (P_xx + P_yy)/2, for a bilayer in the xy plane at zero surface tension).
    table_spacing_nm, table_spacing_rad: spacing of the energy tables handed to OpenMM.
    pair_force_prior: when set (kJ/mol/nm), a Gaussian prior of this width on every pair knot's
        force, centred on 0 (ridge regression with the weight σ²/s², σ² the mean-square residual
        of a mapped force component): a knot that rests on fewer samples than it takes to tell
        its force from the mapped forces' noise is drawn to 0 force instead of fitting that
        noise; well-sampled knots are not moved. None: off.
    """

    SECTION = "tabulated"
    DESCRIPTION = "tabulated (MS-CG) option"

    cutoff_nm: float = 1.0
    pair_spacing_nm: float = 0.02
    bond_spacing_nm: float = 0.005
    angle_spacing_rad: float = 0.05
    dihedral_order: int = 6
    exclusion: str = "1-3"
    smoothness: float = 1e-3
    min_pair_count: int = 20
    wall_kT_nm: float = 0.02
    pressure_bar: Optional[float] = None
    pressure_axes: str = "xyz"
    bonded: str = "force_matching"
    table_spacing_nm: float = 0.0005
    table_spacing_rad: float = 0.002
    pair_force_prior: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("cutoff_nm", "pair_spacing_nm", "bond_spacing_nm", "angle_spacing_rad", "wall_kT_nm",
                     "table_spacing_nm", "table_spacing_rad"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"tabulated option {name} must be > 0, got {value!r}")
        if self.cutoff_nm > 5.0:
            raise ValueError(f"cutoff_nm={self.cutoff_nm} is implausibly large; distances are in nm (1 nm = 10 Å)")
        if self.pair_spacing_nm > 0.25 * self.cutoff_nm:
            raise ValueError(f"pair_spacing_nm={self.pair_spacing_nm} leaves fewer than 4 knots below cutoff_nm={self.cutoff_nm}")
        if self.angle_spacing_rad > 0.5:
            raise ValueError(f"angle_spacing_rad={self.angle_spacing_rad} is too coarse; angles are in radians (0.05 rad ≈ 3°)")
        if self.exclusion not in _EXCLUSIONS:
            raise ValueError(f"exclusion must be one of {sorted(_EXCLUSIONS)}, got {self.exclusion!r}")
        if self.dihedral_order < -1 or self.dihedral_order > 12:
            raise ValueError(f"dihedral_order must be 0..12 (or -1/0 for none), got {self.dihedral_order}")
        if self.smoothness < 0 or self.min_pair_count < 1:
            raise ValueError("smoothness must be >= 0 and min_pair_count >= 1")
        if self.bonded not in ("force_matching", "boltzmann"):
            raise ValueError(f"bonded must be 'force_matching' or 'boltzmann', got {self.bonded!r}")
        if self.pressure_axes not in ("xyz", "xy"):
            raise ValueError(f"pressure_axes must be 'xyz' (bulk) or 'xy' (lateral, a bilayer), got {self.pressure_axes!r}")
        if self.pressure_bar is not None and not (math.isfinite(self.pressure_bar) and abs(self.pressure_bar) < 1e5):
            raise ValueError(f"pressure_bar={self.pressure_bar} is not a plausible pressure in bar")
        if self.pair_force_prior is not None and not (math.isfinite(self.pair_force_prior) and self.pair_force_prior > 0):
            raise ValueError(f"pair_force_prior={self.pair_force_prior} must be a force > 0 in kJ/mol/nm (None: off)")
