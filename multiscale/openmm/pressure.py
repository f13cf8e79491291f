"""CG pressure on given configurations, and a one-parameter pressure correction.

Force matching fits the mean forces at the density of the reference; nothing in it fixes the CG
model's pressure, so a force-matched model run at constant pressure usually settles at the wrong
density (the polymer main job's model was 19 % too dilute at 1 bar). The remedy used here is the
one-parameter form of pressure matching (Das & Andersen, J. Chem. Phys. 132, 164106 (2010)) with
the linear ramp of iterative Boltzmann inversion's pressure correction (Reith, Pütz & Müller-Plathe,
J. Comput. Chem. 24, 1624 (2003)):

    U_corr(r) = A (1 − r / r_c)   for bead pairs of different molecules with r < r_c,

a constant force A / r_c that barely changes the structure of a dense liquid but shifts its
pressure linearly in A. Because P(A) = P(0) + A · ∂P/∂A is exactly linear on fixed configurations,
A follows from one evaluation over the mapped reference configurations, with no extra simulation:
A = (P_target − ⟨P(0)⟩) / ⟨∂P/∂A⟩.

The pressure is the one OpenMM's MonteCarloBarostat balances: molecules are scaled about their
geometric centres with their internal geometry kept, so

    P = N_mol k_B T / V − ∂U/∂V,

and ∂U/∂V is a central finite difference of the potential energy under that move (volume ratio
1 ± ``rel_volume_step``). Use a double-precision platform ("Reference") and a float64 network
(:func:`multiscale.models.io.with_dtype`): float32 energies are too coarse for the difference.

Units: nm, kJ/mol, K; pressures in bar (:data:`multiscale.units.KJ_PER_MOL_NM3_TO_BAR`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np
import openmm
from openmm import unit

from multiscale.units import KJ_PER_MOL_NM3_TO_BAR, kT

#: Name of the correction force in a System (see :meth:`PressureCorrection.to_force`).
FORCE_NAME = "cg_pressure_correction"
#: Its global parameter: the ramp height A at r = 0 (kJ/mol).
PARAMETER = "pressure_ramp_A"


def _molecule_index(molecules: Sequence[Sequence[int]], n: int) -> np.ndarray:
    owner = np.full(n, -1, dtype=np.int64)
    for m, members in enumerate(molecules):
        members = np.asarray(members, dtype=np.int64)
        if members.size == 0:
            raise ValueError(f"molecule {m} is empty")
        if np.any(members < 0) or np.any(members >= n):
            raise ValueError(f"molecule {m} names a particle outside 0..{n - 1}")
        if np.any(owner[members] >= 0):
            raise ValueError(f"molecule {m} shares a particle with another molecule")
        owner[members] = m
    if np.any(owner < 0):
        raise ValueError(f"particles {np.flatnonzero(owner < 0)[:10].tolist()} are in no molecule; list every particle "
                         "(a single particle is a molecule of its own)")
    return owner


def molecular_pressure(
    system: openmm.System,
    positions_nm: np.ndarray,
    boxes_nm: np.ndarray,
    molecules: Sequence[Sequence[int]],
    temperature_K: float,
    *,
    groups: Optional[set] = None,
    kinetic: bool = True,
    rel_volume_step: float = 1e-5,
    platform: str = "Reference",
    axes: str = "xyz",
) -> np.ndarray:
    """Pressure (bar) of ``system`` on each configuration: N_mol k_B T / V − ∂U/∂V, with molecules
    scaled about their geometric centres (OpenMM's barostat move; see the module docstring).
    ``axes="xy"``: the lateral pressure, the volume changed by scaling x and y only (the box height
    and the z coordinates kept): what ``MonteCarloMembraneBarostat`` balances at zero tension with
    its box height fixed, the bilayer's normal being z.

    ``positions_nm`` (T, N, 3), ``boxes_nm`` (T, 3, 3) periodic cells (rows); ``molecules``: the
    particle indices of every molecule (all particles, each once). ``groups``: force groups whose
    energy U is differentiated (default: all). ``kinetic=False`` leaves out N_mol k_B T / V (for the
    pressure of one term alone). Returns (T,) pressures in bar.
    """
    x = np.asarray(positions_nm, dtype=np.float64)
    boxes = np.asarray(boxes_nm, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if boxes.ndim == 2:
        boxes = np.broadcast_to(boxes, (x.shape[0], 3, 3))
    n = system.getNumParticles()
    if x.shape[1:] != (n, 3) or boxes.shape != (x.shape[0], 3, 3):
        raise ValueError(f"positions must be (T, {n}, 3) nm and boxes (T, 3, 3) nm; got {x.shape} and {boxes.shape}")
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(boxes)):
        raise ValueError("positions or boxes contain NaN or Inf")
    if not 0 < rel_volume_step < 0.01:
        raise ValueError(f"rel_volume_step must lie in (0, 0.01), got {rel_volume_step}")
    if axes not in ("xyz", "xy"):
        raise ValueError(f"axes must be 'xyz' (isotropic) or 'xy' (lateral, box height kept), got {axes!r}")
    owner = _molecule_index(molecules, n)
    counts = np.bincount(owner, minlength=len(molecules)).astype(np.float64)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    group_mask = -1 if groups is None else sum(1 << int(g) for g in groups)
    power = 1.0 / len(axes)  # the length scale per scaled axis for a volume ratio 1 ± rel_volume_step
    scaled = np.array([1.0, 1.0, 1.0 if axes == "xyz" else 0.0])  # which Cartesian components scale
    scales = ((1.0 + rel_volume_step) ** power, (1.0 - rel_volume_step) ** power)
    out = np.empty(x.shape[0])
    try:
        for t in range(x.shape[0]):
            centres = np.zeros((len(molecules), 3))
            np.add.at(centres, owner, x[t])
            centres /= counts[:, None]
            volume = abs(float(np.linalg.det(boxes[t])))
            energies, volumes = [], []
            for s in scales:
                factor = 1.0 + (s - 1.0) * scaled  # per Cartesian component
                context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in boxes[t] * factor])
                context.setPositions(x[t] + (centres * (factor - 1.0))[owner])
                state = context.getState(getEnergy=True, groups=group_mask)
                energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
                volumes.append(abs(float(np.linalg.det(boxes[t] * factor))))
            dudv = (energies[0] - energies[1]) / (volumes[0] - volumes[1])
            ideal = len(molecules) * kT(temperature_K) / volume if kinetic else 0.0
            out[t] = (ideal - dudv) * KJ_PER_MOL_NM3_TO_BAR
    finally:
        del context
    return out


def ramp_force(molecules: Sequence[Sequence[int]], cutoff_nm: float, A_kj_mol: float = 0.0,
               periodic: bool = True, exclusions: Sequence[Sequence[int]] = ()) -> openmm.CustomNonbondedForce:
    """The correction U = A (1 − r/r_c) on every pair of beads in *different* molecules within
    ``cutoff_nm`` (nm), with global parameter :data:`PARAMETER` = ``A_kj_mol`` (kJ/mol).

    Intermolecular only: under the barostat's molecular scaling only intermolecular forces do work,
    so only they set the pressure; leaving intramolecular pairs alone keeps the correction from
    biasing single-chain conformations directly. ``molecules``: bead indices of every molecule.
    ``exclusions``: pairs to exclude as well. OpenMM's CPU and CUDA platforms require every
    CustomNonbondedForce of a System to share one exclusion list, so give the priors' (they are
    intramolecular and change nothing here); :meth:`PressureCorrection.add_to` does that.
    """
    if not cutoff_nm > 0:
        raise ValueError(f"cutoff_nm must be a positive distance in nm, got {cutoff_nm!r}")
    n = sum(len(m) for m in molecules)
    owner = _molecule_index(molecules, n)
    force = openmm.CustomNonbondedForce(f"{PARAMETER}*(1 - r/{float(cutoff_nm)!r})*step(abs(molecule1 - molecule2) - 0.5)")
    force.setName(FORCE_NAME)
    force.addGlobalParameter(PARAMETER, float(A_kj_mol))
    force.addPerParticleParameter("molecule")
    for m in owner.tolist():
        force.addParticle([float(m)])
    for i, j in exclusions:
        force.addExclusion(int(i), int(j))
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                             else openmm.CustomNonbondedForce.CutoffNonPeriodic)
    force.setCutoffDistance(float(cutoff_nm))
    force.setUseLongRangeCorrection(False)
    return force


def _custom_nonbonded_exclusions(system: openmm.System) -> list:
    """The exclusion list of the System's CustomNonbondedForces (they must all share one)."""
    for force in system.getForces():
        if isinstance(force, openmm.CustomNonbondedForce):
            return [tuple(force.getExclusionParticles(k)) for k in range(force.getNumExclusions())]
    return []


@dataclass
class PressureCorrection:
    """A fitted intermolecular ramp: ``A_kj_mol`` (kJ/mol), ``cutoff_nm`` (nm); and the pressures
    it was fitted from (bar): ``target_bar``, the model's mean pressure on the configurations
    without it, ``pressure_before_bar`` ± ``pressure_before_sem_bar``, and ``bar_per_kj_mol`` = ∂P/∂A."""

    A_kj_mol: float
    cutoff_nm: float
    target_bar: float
    pressure_before_bar: float
    pressure_before_sem_bar: float
    bar_per_kj_mol: float
    n_frames: int

    def to_force(self, molecules: Sequence[Sequence[int]], periodic: bool = True,
                 exclusions: Sequence[Sequence[int]] = ()) -> openmm.CustomNonbondedForce:
        return ramp_force(molecules, self.cutoff_nm, self.A_kj_mol, periodic, exclusions)

    def add_to(self, system: openmm.System, molecules: Sequence[Sequence[int]]) -> int:
        """Add the correction to ``system`` (periodic), sharing the exclusions of its other
        CustomNonbondedForces; returns the force index."""
        return system.addForce(self.to_force(molecules, system.usesPeriodicBoundaryConditions(),
                                             _custom_nonbonded_exclusions(system)))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def fit_pressure_correction(
    system: openmm.System,
    positions_nm: np.ndarray,
    boxes_nm: np.ndarray,
    molecules: Sequence[Sequence[int]],
    temperature_K: float,
    *,
    target_bar: float = 1.0,
    cutoff_nm: float = 1.0,
    rel_volume_step: float = 1e-5,
    platform: str = "Reference",
    sem_blocks: int = 10,
    axes: str = "xyz",
) -> PressureCorrection:
    """The ramp height A (kJ/mol) that brings the mean pressure of ``system`` on the given
    configurations (e.g. the mapped reference, sampled at ``target_bar``) to ``target_bar``.

    ``system``: the CG System without the correction (priors + network, best with a float64
    network). The ramp is added to it in a spare force group while the pressures are evaluated (and
    removed after), so P(0) and ∂P/∂A come from the same configurations. Refuses configurations on
    which the ramp exerts no pressure. ``axes="xy"``: the lateral pressure (:func:`molecular_pressure`),
    for a bilayer at zero tension.
    """
    from multiscale.cg.analysis import block_sem

    used = {system.getForce(k).getForceGroup() for k in range(system.getNumForces())}
    free = [g for g in range(31, -1, -1) if g not in used]
    if not free:
        raise ValueError("every force group 0-31 is in use; free one for the pressure ramp")
    if sum(len(m) for m in molecules) != system.getNumParticles():
        raise ValueError(f"molecules cover {sum(len(m) for m in molecules)} beads but the System has "
                         f"{system.getNumParticles()}; list every bead in exactly one molecule")
    ramp = ramp_force(molecules, cutoff_nm, 1.0, periodic=True, exclusions=_custom_nonbonded_exclusions(system))
    ramp.setForceGroup(free[0])
    # added to the caller's System for the evaluation and removed again (a System holding a
    # TorchForce cannot be copied through OpenMM's serializer)
    index = system.addForce(ramp)
    try:
        base = molecular_pressure(system, positions_nm, boxes_nm, molecules, temperature_K, groups=used,
                                  rel_volume_step=rel_volume_step, platform=platform, axes=axes)
        slope = molecular_pressure(system, positions_nm, boxes_nm, molecules, temperature_K, groups={free[0]},
                                   kinetic=False, rel_volume_step=rel_volume_step, platform=platform, axes=axes)
    finally:
        system.removeForce(index)
    mean_slope = float(slope.mean())
    if not abs(mean_slope) > 0:
        raise ValueError("the ramp exerts no pressure on these configurations: no bead pairs within cutoff_nm; "
                         "raise cutoff_nm or check the bonds/exclusion")
    mean_base = float(base.mean())
    A = (float(target_bar) - mean_base) / mean_slope
    if not math.isfinite(A):
        raise ValueError(f"the fitted ramp height is not finite (P(0) = {mean_base} bar, dP/dA = {mean_slope} bar mol/kJ)")
    return PressureCorrection(A_kj_mol=A, cutoff_nm=float(cutoff_nm), target_bar=float(target_bar),
                              pressure_before_bar=mean_base, pressure_before_sem_bar=block_sem(base, sem_blocks),
                              bar_per_kj_mol=mean_slope, n_frames=int(base.size))
