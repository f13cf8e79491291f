"""Area and thickness matching of a solvent-free CG bilayer: two pair ramps set by short runs so
that the bilayer's phosphate-to-phosphate thickness and its area per lipid at zero tension are the
reference's.

Why a solvent-free force-matched bilayer needs it: its pair tables are fitted to mapped forces
that are mostly noise (the water's kicks: ~97 % of the mean-square force in the DMPC quick run),
and the water's push on the head groups, a one-body effect, has no pairwise form. The fitted
model comes out thinner (−4 to −10 %), and its area at zero tension, which the lateral virial
constraint fixes only through the pressure at the reference configurations, wanders by ±15 %
from fit to fit: the CG bilayer is soft in area (an all-pair ramp of 1.4 kJ/mol moved it by 40 %).
Two knobs, each an intermolecular ramp U += A (1 − r/r_c) (between lipids only, so that each
lipid's own bonded distributions stay as refined), set one after the other:

1. **head–tail repulsion** ``A_ht`` on the head (NC, PO) – tail (C, CT) pairs, the pairwise
   stand-in for the hydrophobic effect that keeps heads out of the core (the Cooke–Kremer–Deserno
   lipids are built this way): the thickness, at the reference's area (so that the area error
   does not enter), by a feedback controller during one run (:func:`control_thickness`): the
   thickness relaxes over hundreds of ps, longer than separate trials can afford;
2. **all pairs** ``A_all``: the lateral pressure at the reference's area, in NVT runs, to the
   barostat's pressure, so that the area at zero tension (``MonteCarloMembraneBarostat``, box
   height fixed) is the reference's; at that area the thickness is the one matched in step 1
   (:func:`match_area`, trials by :func:`~multiscale.openmm.ramp_iteration.iterate_ramp`: the
   pressure answers within tens of ps at a fixed area).

Units: kJ/mol, nm, nm², K, ps.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np
import openmm
from openmm import unit

#: the lateral pressure's error unit (bar), and the first trial step of the all-pair ramp in it:
#: about 600 bar per kJ/mol (the ramp's virial, ~10⁴ pairs of ~0.8 nm in 59 nm³ of DMPC box)
PRESSURE_SCALE_BAR = 100.0
GUESS_PRESSURE_SLOPE = 6.0
#: frames of each lateral-pressure trial (the last two thirds count): the instantaneous virial of
#: 320 beads swings by ~±500 bar, and ±50 bar of lateral pressure is ~±10 % of area for a bilayer
#: as soft as a real one (K_A ≈ 0.23 N/m over a 6 nm box)
PRESSURE_FRAMES = 150


#: the thickness controller (:func:`control_thickness`): its sensitivity, relative thickness per
#: kJ/mol of intermolecular head–tail ramp (DMPC quick patch, 320 ps runs at fixed ramps and at
#: the reference area: 2.9 nm at 0, 3.9 nm at 5.45 kJ/mol, of 3.46 nm), and its integral time,
#: shorter than the thickness's own relaxation (~100 ps in those runs) so that a 480 ps run
#: settles (at 100 ps the ramp was still climbing at the end, at 40 ps nearly settled), at the
#: cost of some overshoot
THICKNESS_SENSITIVITY = 0.05
THICKNESS_CONTROL_TIME_PS = 30.0


def control_thickness(system: openmm.System, positions, box, head_indices: Sequence[int], *, target_nm: float,
                      temperature_K: float, steps: int, timestep_ps: float, inner_steps: int = 1, platform: str = "CPU",
                      seed: int = 0, relaxation_ps: float = THICKNESS_CONTROL_TIME_PS, log=None) -> Dict:
    """The head–tail ramp that holds the bilayer at ``target_nm`` in NVT at the area of ``box``,
    set by feedback during one run of ``steps`` (:func:`~multiscale.openmm.ramp_control.control_ramp`
    on :data:`~multiscale.openmm.tabulated.INTERMOLECULAR_SCALE`): ``system`` holds the head–tail
    pairs' intermolecular ramp at 1 kJ/mol and no other, so the scale is the ramp in kJ/mol.
    Returns the controller's result with ``A_kj_mol`` (its mean over the last 15 % of the run)."""
    import mdtraj

    from multiscale.cg.analysis.thickness import bilayer_thickness
    from multiscale.openmm.ramp_control import control_ramp
    from multiscale.openmm.tabulated import INTERMOLECULAR_SCALE

    if not 1.0 < target_nm < 10.0:
        raise ValueError(f"target_nm={target_nm} is not a bilayer thickness in nm (DMPC: ~3.5 nm)")
    top = mdtraj.Topology()
    residue = top.add_residue("B", top.add_chain())
    for _ in range(system.getNumParticles()):
        top.add_atom("B", mdtraj.element.virtual, residue)

    def thickness(x, cell):
        frame = mdtraj.Trajectory(x[None], top)
        frame.unitcell_vectors = cell[None]
        return float(bilayer_thickness(frame, head_indices)[0])

    result = control_ramp(system, positions, box, thickness, parameter=INTERMOLECULAR_SCALE, target=target_nm,
                          sensitivity=THICKNESS_SENSITIVITY, relaxation_ps=relaxation_ps, temperature_K=temperature_K,
                          steps=steps, timestep_ps=timestep_ps, inner_steps=inner_steps, platform=platform, seed=seed,
                          updates=max(10, min(400, steps // 20)), log=log)
    return {**result, "A_kj_mol": result["A"], "chosen": "mean of the controller over the last 15 % of its run"}


def lateral_pressure_bar(system: openmm.System, positions: np.ndarray, boxes: np.ndarray, molecules: Sequence[Sequence[int]],
                         *, temperature_K: float, platform: str = "CPU", h: float = 1e-4) -> np.ndarray:
    """(frames,) lateral pressure P_L = (P_xx + P_yy)/2 in bar of each frame (whole molecules),
    from the molecular virial: N_mol kBT/V − (1/2V) dU/dε, dU/dε by central differences of
    OpenMM energies when the box and the molecules' centres of mass are scaled by 1 + ε in x and
    y (molecules rigid): the pressure the membrane barostat balances against the tension."""
    from multiscale.units import KJ_PER_MOL_NM3_TO_BAR, kT

    bare = openmm.XmlSerializer.clone(system)
    for k in reversed(range(bare.getNumForces())):
        if isinstance(bare.getForce(k), (openmm.MonteCarloMembraneBarostat, openmm.MonteCarloBarostat)):
            bare.removeForce(k)
    context = openmm.Context(bare, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    masses = np.array([bare.getParticleMass(i).value_in_unit(unit.dalton) for i in range(bare.getNumParticles())])
    members = [np.asarray(m, dtype=np.int64) for m in molecules]
    pressures = []
    for x, cell in zip(np.asarray(positions, dtype=float), np.asarray(boxes, dtype=float)):
        shift = np.zeros_like(x)
        for m in members:
            shift[m, :2] = (masses[m, None] * x[m, :2]).sum(0) / masses[m].sum()
        energies = []
        for eps in (h, -h):
            factor = np.array([1 + eps, 1 + eps, 1.0])
            context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row * factor)) for row in cell])
            context.setPositions(x + eps * shift)
            energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        volume = abs(np.linalg.det(cell))
        du = (energies[0] - energies[1]) / (2 * h)
        pressures.append((len(members) * kT(temperature_K) - 0.5 * du) / volume * KJ_PER_MOL_NM3_TO_BAR)
    return np.asarray(pressures)


def match_area(system_for: Callable[[float], openmm.System], positions, box, molecules: Sequence[Sequence[int]], *,
               target_bar: float, iterations: int, temperature_K: float, steps: int, timestep_ps: float,
               inner_steps: int = 1, platform: str = "CPU", tolerance_bar: float = 15.0, max_step_kj_mol: float = 0.5,
               log=None, seed: int = 0) -> Dict:
    """The all-pair ramp A (kJ/mol) whose NVT runs at the area of ``box`` have the lateral
    pressure ``target_bar`` (:func:`lateral_pressure_bar`, second half of each run): then the
    zero-tension area is that area. The pressure is matched rather than the area itself because it
    converges in tens of ps at a fixed area, while the area of a soft CG bilayer relaxes over
    hundreds (a 60 ps zero-tension trial read +0.4 % where the 160 ps run went on to −15 %).
    ``system_for(A)`` builds the System (no barostat). Returns
    :func:`~multiscale.openmm.ramp_iteration.iterate_ramp`'s result, errors in units of 100 bar."""
    from multiscale.openmm.ramp_iteration import iterate_ramp
    from multiscale.openmm.short_runs import sample_run

    if abs(target_bar) > 1e4:
        raise ValueError(f"target_bar={target_bar} is not a plausible pressure in bar")
    # a warm-up run first: the reference frame relaxes in the CG model over tens of ps, and a first
    # trial from it reads a pressure biased by that relaxation
    warm, _ = sample_run(system_for(0.0), positions, box, temperature_K=temperature_K, steps=steps, timestep_ps=timestep_ps,
                         inner_steps=inner_steps, platform=platform, seed=seed + 1000, frames=2)
    state = {"positions": warm[-1], "minimize": False}

    def measure(A: float, k: int):
        system = system_for(A)
        xyz, cells = sample_run(system, state["positions"], box, temperature_K=temperature_K, steps=steps,
                                timestep_ps=timestep_ps, inner_steps=inner_steps, platform=platform, seed=seed + 7 * k,
                                frames=PRESSURE_FRAMES, minimize=state["minimize"])
        state["positions"], state["minimize"] = xyz[-1], False
        kept = slice(PRESSURE_FRAMES // 3, None)
        p = lateral_pressure_bar(system, xyz[kept], cells[kept], molecules, temperature_K=temperature_K, platform=platform)
        return float(p.mean()), float(p.std(ddof=1) / np.sqrt(len(p) / 4))

    result = iterate_ramp(measure, target=target_bar, iterations=iterations, guess_slope=GUESS_PRESSURE_SLOPE,
                          tolerance=tolerance_bar / PRESSURE_SCALE_BAR, max_step_kj_mol=max_step_kj_mol,
                          value_key="lateral_pressure_bar", scale=PRESSURE_SCALE_BAR, log=log,
                          what="lateral pressure (NVT at the reference area), all-pair ramp, trial")
    # the last trial's end: a start for the CG runs that has relaxed in the model
    return {**result, "positions": np.asarray(state["positions"]).tolist()}
