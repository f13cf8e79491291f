"""The validation settings: sample sizes, thresholds and the time-step safety fraction, as a
typed dataclass that loads from YAML (``--config FILE``), with the ``--quick`` preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from multiscale.config import YamlConfig


@dataclass
class ValidationSettings(YamlConfig):
    """Every number :func:`multiscale.validate.validate` uses. Lengths nm, energies kJ/mol,
    forces kJ/mol/nm, K, fs."""

    SECTION = "validate"
    DESCRIPTION = "validation setting"

    #: temperature of the thermal perturbations and of the NVE velocities
    temperature_K: float = 300.0
    seed: int = 0
    #: random rotations / translations / lattice shifts / permutations tried per symmetry check
    symmetry_trials: int = 3
    #: |ΔE| / (|E| + N kJ/mol) allowed for an exact invariance, double and single precision
    energy_rtol_double: float = 1e-10
    energy_rtol_single: float = 2e-6
    #: RMS |F(Rx) − R F(x)| / RMS |F| allowed
    force_rtol_double: float = 1e-8
    force_rtol_single: float = 1e-4
    #: particles sampled for the finite-difference check (the one with the largest force among them)
    gradient_particles: int = 8
    #: central-difference steps (Richardson extrapolation of h and h/2)
    gradient_step_double_nm: float = 1e-4
    gradient_step_single_nm: float = 1e-3
    #: RMS |F − F_fd| / RMS |F| allowed (single precision adds the energy noise floor)
    gradient_rtol_double: float = 1e-5
    gradient_rtol_single: float = 1e-2
    #: cutoff path: from r_c − half_width to r_c + half_width, points, bisections of the worst segment
    path_half_width_nm: float = 0.05
    path_points: int = 101
    path_refinements: int = 4
    #: an energy jump above this fraction of kT is reported (truncated LJ at 1 nm jumps ~1e-3 kT)
    energy_jump_kT: float = 0.01
    force_jump_kj_mol_nm: float = 1.0
    #: Lanczos iterations on Hessian-vector products, relative convergence of λmax
    lanczos_iterations: int = 40
    lanczos_tolerance: float = 1e-5
    #: displacement (largest atomic, nm) of the finite-difference Hessian-vector products
    hessian_step_nm: float = 1e-4
    #: thermal perturbations: Langevin snapshots at temperature_K this many steps apart
    thermal_configurations: int = 3
    thermal_steps: int = 200
    #: recommended step = safety_fraction × the smallest Verlet limit 2/ω_max (0.25: ω·dt ≤ 0.5)
    safety_fraction: float = 0.25
    #: NVE run at the recommended step
    nve_steps: int = 2000
    nve_report_every: int = 10
    #: drift goal in kT/ns/dof (mixed precision)
    nve_drift_goal: float = 1e-4
    #: ensemble force spread allowed at the structure (largest per-particle), kJ/mol/nm
    max_force_spread: float = 100.0

    def __post_init__(self) -> None:
        positive = [f.name for f in dataclasses.fields(self) if f.name not in ("seed",)]
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.temperature_K > 5000:
            raise ValueError(f"temperature_K={self.temperature_K} K is not a simulation temperature; give it in K (e.g. 300)")
        if not self.safety_fraction < 1:
            raise ValueError(f"safety_fraction must be below 1 (a fraction of the Verlet limit), got {self.safety_fraction}")
        if self.path_points < 5:
            raise ValueError(f"path_points must be at least 5, got {self.path_points}")
        if self.gradient_step_double_nm > 0.01 or self.gradient_step_single_nm > 0.05 or self.hessian_step_nm > 0.01:
            raise ValueError("finite-difference steps are in nm (1e-4 to 1e-2); a larger value is almost surely in Å")


#: the ``--quick`` preset: under a minute for a few hundred particles on 2 CPU cores
QUICK = ValidationSettings(symmetry_trials=2, gradient_particles=4, path_points=61, path_refinements=3,
                           lanczos_iterations=25, thermal_configurations=2, thermal_steps=100, nve_steps=400)
