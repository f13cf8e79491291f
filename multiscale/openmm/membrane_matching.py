"""Area and thickness matching of a solvent-free CG bilayer: two pair ramps set by short runs so
that the bilayer's phosphate-to-phosphate thickness and its area per lipid at zero tension are the
reference's.

Why a solvent-free force-matched bilayer needs it: its pair tables are fitted to mapped forces
that are mostly noise (the water's kicks: ~97 % of the mean-square force in the DMPC quick run),
and the water's push on the head groups, a one-body effect, has no pairwise form. The fitted
model comes out thinner (−4 to −10 %), and its area at zero tension, which the lateral virial
constraint fixes only through the pressure at the reference configurations, wanders by ±15 %
from fit to fit: the CG bilayer is soft in area (an all-pair ramp of 1.4 kJ/mol moved it by 40 %).
Two knobs, each a ramp U += A (1 − r/r_c), set one after the other (:func:`match_thickness`,
then :func:`match_area`) by :func:`~multiscale.openmm.ramp_iteration.iterate_ramp`:

1. **head–tail repulsion** ``A_ht`` on the head (NC, PO) – tail (C, CT) pairs, the pairwise
   stand-in for the hydrophobic effect that keeps heads out of the core (the Cooke–Kremer–Deserno
   lipids are built this way): the thickness, in NVT runs at the reference's area (so that the
   area error does not enter);
2. **all pairs** ``A_all``: the lateral pressure at the reference's area, in NVT runs, to the
   barostat's pressure, so that the area at zero tension (``MonteCarloMembraneBarostat``, box
   height fixed) is the reference's; at that area the thickness is the one matched in step 1.

Units: kJ/mol, nm, nm², K, ps.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import openmm
from openmm import unit

#: first trial step of the head–tail ramp: relative thickness change per kJ/mol, measured on the
#: DMPC quick run (3.1 kJ/mol: +14 %)
GUESS_THICKNESS_SLOPE = 0.045
#: the lateral pressure's error unit (bar), and the first trial step of the all-pair ramp in it:
#: about 600 bar per kJ/mol (the ramp's virial, ~10⁴ pairs of ~0.8 nm in 59 nm³ of DMPC box)
PRESSURE_SCALE_BAR = 100.0
GUESS_PRESSURE_SLOPE = 6.0
#: frames of each lateral-pressure trial (the last two thirds count): the instantaneous virial of
#: 320 beads swings by ~±500 bar, and ±50 bar of lateral pressure is ~±10 % of area for a bilayer
#: as soft as a real one (K_A ≈ 0.23 N/m over a 6 nm box)
PRESSURE_FRAMES = 150


def bilayer_run(system: openmm.System, positions, box, head_indices: Sequence[int], *, temperature_K: float, steps: int,
                 timestep_ps: float, inner_steps: int = 1, platform: str = "CPU", seed: int = 0, frames: int = 40,
                 minimize: bool = True) -> Tuple[Dict[str, float], np.ndarray, np.ndarray]:
    """Mean area per lipid (nm²; one head bead per lipid) and thickness (nm) over the second half
    of a Langevin run of ``system`` from ``positions`` and ``box`` (nm): at zero tension when the
    System holds a membrane barostat, else at the area of ``box``. Returns (the means and their
    SEMs, the last positions, the last box), so that a next trial can go on from there."""
    import mdtraj

    from multiscale.cg.analysis.thickness import bilayer_thickness
    from multiscale.openmm.short_runs import sample_run

    xyz, cells = sample_run(system, positions, box, temperature_K=temperature_K, steps=steps, timestep_ps=timestep_ps,
                            inner_steps=inner_steps, platform=platform, seed=seed, frames=frames, minimize=minimize)
    last = (np.asarray(xyz[-1]), np.asarray(cells[-1]))
    xyz, cells = np.asarray(xyz)[frames // 2:], np.asarray(cells)[frames // 2:]
    top = mdtraj.Topology()
    residue = top.add_residue("B", top.add_chain())
    for _ in range(xyz.shape[1]):
        top.add_atom("B", mdtraj.element.virtual, residue)
    traj = mdtraj.Trajectory(xyz, top)
    traj.unitcell_vectors = cells
    thickness = bilayer_thickness(traj, head_indices)
    area = np.linalg.norm(np.cross(cells[:, 0], cells[:, 1]), axis=1) / (len(head_indices) / 2)
    n = len(area)
    return ({"area_per_lipid_nm2": float(area.mean()), "area_sem": float(area.std(ddof=1) / np.sqrt(n / 4)),
             "thickness_nm": float(thickness.mean()), "thickness_sem": float(thickness.std(ddof=1) / np.sqrt(n / 4))},
            *last)


def _chained(positions, box, head_indices, run):
    """A trial runner whose every trial goes on from the last one's end (minimised once), so
    that the bilayer relaxes across the trials."""
    state = {"positions": np.asarray(positions), "box": np.asarray(box), "minimize": True}

    def trial(system: openmm.System, seed: int) -> Dict[str, float]:
        measured, state["positions"], _ = bilayer_run(system, state["positions"], state["box"], head_indices,
                                                      seed=seed, minimize=state["minimize"], **run)
        state["minimize"] = False
        return measured

    return trial


def match_thickness(system_for: Callable[[float], openmm.System], positions, box, head_indices: Sequence[int], *,
                    target_nm: float, iterations: int, tolerance: float = 0.015, max_step_kj_mol: float = 3.0, log=None,
                    seed: int = 0, **run) -> Dict:
    """The head–tail ramp A (kJ/mol) whose NVT runs at the area of ``box`` give the thickness
    ``target_nm``: ``system_for(A)`` builds the System (no barostat); each trial is a
    :func:`bilayer_run` (``run``: its keyword arguments). Returns
    :func:`~multiscale.openmm.ramp_iteration.iterate_ramp`'s result."""
    from multiscale.openmm.ramp_iteration import iterate_ramp

    if not 1.0 < target_nm < 10.0:
        raise ValueError(f"target_nm={target_nm} is not a bilayer thickness in nm (DMPC: ~3.5 nm)")
    # a warm-up run first (the reference frame relaxes in the CG model over tens of ps)
    from multiscale.openmm.short_runs import sample_run

    warm, _ = sample_run(system_for(0.0), positions, box, seed=seed + 1000, frames=2,
                         **{k: v for k, v in run.items() if k in ("temperature_K", "steps", "timestep_ps", "inner_steps", "platform")})
    trial = _chained(warm[-1], box, head_indices, run)

    def measure(A: float, k: int):
        measured = trial(system_for(A), seed + 7 * k)
        return measured["thickness_nm"], measured["thickness_sem"]

    return iterate_ramp(measure, target=target_nm, iterations=iterations, guess_slope=GUESS_THICKNESS_SLOPE,
                        tolerance=tolerance, max_step_kj_mol=max_step_kj_mol, value_key="thickness_nm", log=log,
                        what="thickness (NVT at the reference area), head-tail ramp, trial")


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

    return iterate_ramp(measure, target=target_bar, iterations=iterations, guess_slope=GUESS_PRESSURE_SLOPE,
                        tolerance=tolerance_bar / PRESSURE_SCALE_BAR, max_step_kj_mol=max_step_kj_mol,
                        value_key="lateral_pressure_bar", scale=PRESSURE_SCALE_BAR, log=log,
                        what="lateral pressure (NVT at the reference area), all-pair ramp, trial")
