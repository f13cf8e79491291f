"""Options of the prior fits (:class:`PriorConfig`; YAML section ``priors``). The rules they
tune are described in :mod:`multiscale.cg.priors`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


from multiscale.config import YamlConfig
from multiscale.cg.priors.records import _EXCLUSIONS, _REPULSIVE_FORMS

#: How bond priors are fitted (rules in :mod:`multiscale.cg.priors`).
BOND_FITS = ("well", "moments")

# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class PriorConfig(YamlConfig):
    """Options of the prior fits (see the module docstring for the rules).

    Attributes
    ----------
    bins: histogram bins for bond and angle distributions.
    dihedral_bins: histogram bins on [−π, π) for dihedrals.
    fit_window_kT: the harmonic fit uses the well up to this many kBT above its minimum.
    bond_fit: "well" (parabola fitted to the free-energy well) or "moments" (r0 and kBT/k are the
        mean and variance of the Jacobian-corrected bond-length distribution; robust for broad,
        skewed bonds of short runs, where the well fit is ill-conditioned).
    angle_fit: the same choice for angles ("moments": θ0 and kBT/k from the 1/sin θ-weighted
        mean and variance; for broad angles such as a lipid's glycerol).
    tail_quantile: bond/angle histograms span the [q, 1 − q] quantiles of the samples.
    min_samples: fewest samples per type tuple for a bonded fit.
    min_well_bins: fewest histogram bins inside the fitted well.
    min_bond_k: smallest accepted bond force constant, kJ mol⁻¹ nm⁻².
    min_angle_k: smallest accepted angle force constant, kJ mol⁻¹ rad⁻².
    use_dihedrals: fit PeriodicTorsionForce priors to the dihedrals.
    dihedral_periodicities: periodicities n of the torsion Fourier series.
    use_repulsive: fit the repulsive non-bonded prior.
    repulsive_form: "r12" (shifted ε(σ/r)¹²) or "wca" (Weeks–Chandler–Andersen).
    repulsive_quantile: σ is this quantile of the nearest-neighbour contact distances.
    repulsive_epsilon_kT: ε in units of kBT.
    min_sigma_nm: smallest accepted σ, nm.
    min_contacts: fewest contact distances per non-bonded type pair.
    nonbonded_cutoff_nm: contacts are searched within this distance, nm.
    exclusion: "1-2", "1-3" or "1-4": bonded separations excluded from the non-bonded prior.
    """

    SECTION = "priors"
    DESCRIPTION = "prior option"

    bins: int = 100
    dihedral_bins: int = 72
    fit_window_kT: float = 3.0
    bond_fit: str = "well"
    angle_fit: str = "well"
    tail_quantile: float = 1e-4
    min_samples: int = 500
    min_well_bins: int = 5
    min_bond_k: float = 10.0
    min_angle_k: float = 1.0
    use_dihedrals: bool = False
    dihedral_periodicities: List[int] = field(default_factory=lambda: [1, 2, 3])
    use_repulsive: bool = True
    repulsive_form: str = "r12"
    repulsive_quantile: float = 0.01
    repulsive_epsilon_kT: float = 1.0
    min_sigma_nm: float = 0.1
    min_contacts: int = 50
    nonbonded_cutoff_nm: float = 1.0
    exclusion: str = "1-3"

    def __post_init__(self) -> None:
        for name in ("bins", "dihedral_bins", "min_samples", "min_well_bins", "min_contacts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
            setattr(self, name, int(getattr(self, name)))
        if not self.fit_window_kT > 0:
            raise ValueError(f"fit_window_kT must be > 0 (in kBT), got {self.fit_window_kT!r}")
        if self.bond_fit not in BOND_FITS:
            raise ValueError(f"bond_fit must be one of {BOND_FITS}, got {self.bond_fit!r}")
        if self.angle_fit not in BOND_FITS:
            raise ValueError(f"angle_fit must be one of {BOND_FITS}, got {self.angle_fit!r}")
        if not 0.0 <= self.tail_quantile < 0.25:
            raise ValueError(f"tail_quantile must lie in [0, 0.25), got {self.tail_quantile!r}")
        if not 0.0 <= self.repulsive_quantile < 1.0:
            raise ValueError(f"repulsive_quantile must lie in [0, 1), got {self.repulsive_quantile!r}")
        if not self.repulsive_epsilon_kT > 0:
            raise ValueError(f"repulsive_epsilon_kT must be > 0, got {self.repulsive_epsilon_kT!r}")
        if self.repulsive_form not in _REPULSIVE_FORMS:
            raise ValueError(f"repulsive_form must be one of {_REPULSIVE_FORMS}, got {self.repulsive_form!r}")
        if self.exclusion not in _EXCLUSIONS:
            raise ValueError(f"exclusion must be one of {sorted(_EXCLUSIONS)}, got {self.exclusion!r}")
        if not self.nonbonded_cutoff_nm > 0:
            raise ValueError(f"nonbonded_cutoff_nm must be a positive distance in nm, got {self.nonbonded_cutoff_nm!r}")
        if self.nonbonded_cutoff_nm > 5.0:
            raise ValueError(
                f"nonbonded_cutoff_nm={self.nonbonded_cutoff_nm} is implausibly large; distances are in nm, not Å"
            )
        if self.min_bond_k < 0 or self.min_angle_k < 0 or self.min_sigma_nm < 0:
            raise ValueError("min_bond_k, min_angle_k and min_sigma_nm must be >= 0")
        periods = [int(n) for n in self.dihedral_periodicities]
        if not periods or min(periods) < 1 or len(set(periods)) != len(periods):
            raise ValueError(
                f"dihedral_periodicities must be distinct positive integers, got {self.dihedral_periodicities!r}"
            )
        self.dihedral_periodicities = periods


