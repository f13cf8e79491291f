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
2. **all pairs** ``A_all``, the lateral pressure: the area per lipid, in runs at zero tension
   (``MonteCarloMembraneBarostat``, box height fixed), with ``A_ht`` in place. At the right area
   the thickness is then the one matched in step 1.

Units: kJ/mol, nm, nm², K, ps.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import openmm

#: first trial steps, relative change per kJ/mol, measured on the DMPC quick run: the head–tail
#: ramp on the thickness (3.1 kJ/mol: +14 %), the all-pair ramp on the area (1.4 kJ/mol: +40 %)
GUESS_THICKNESS_SLOPE = 0.045
GUESS_AREA_SLOPE = 0.25


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
    """A trial runner whose every trial goes on from the last one's end (minimised once): the
    area relaxes slowly, and chained trials let it relax across them."""
    state = {"positions": np.asarray(positions), "box": np.asarray(box), "minimize": True}

    def trial(system: openmm.System, seed: int, follow_box: bool) -> Dict[str, float]:
        measured, state["positions"], last_box = bilayer_run(system, state["positions"], state["box"], head_indices,
                                                             seed=seed, minimize=state["minimize"], **run)
        state["minimize"] = False
        if follow_box:
            state["box"] = last_box
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
    trial = _chained(positions, box, head_indices, run)

    def measure(A: float, k: int):
        measured = trial(system_for(A), seed + 7 * k, follow_box=False)
        return measured["thickness_nm"], measured["thickness_sem"]

    return iterate_ramp(measure, target=target_nm, iterations=iterations, guess_slope=GUESS_THICKNESS_SLOPE,
                        tolerance=tolerance, max_step_kj_mol=max_step_kj_mol, value_key="thickness_nm", log=log,
                        what="thickness (NVT at the reference area), head-tail ramp, trial")


def match_area(system_for: Callable[[float], openmm.System], positions, box, head_indices: Sequence[int], *,
               target_nm2: float, iterations: int, tolerance: float = 0.015, max_step_kj_mol: float = 0.5, log=None,
               seed: int = 0, **run) -> Dict:
    """The all-pair ramp A (kJ/mol) whose zero-tension runs give the area per lipid
    ``target_nm2``: ``system_for(A)`` builds the System with its membrane barostat; trials as in
    :func:`match_thickness`."""
    from multiscale.openmm.ramp_iteration import iterate_ramp

    if not 0.2 < target_nm2 < 2.0:
        raise ValueError(f"target_nm2={target_nm2} is not an area per lipid in nm² (DMPC: ~0.6 nm²)")
    trial = _chained(positions, box, head_indices, run)

    def measure(A: float, k: int):
        measured = trial(system_for(A), seed + 100 + 7 * k, follow_box=True)
        return measured["area_per_lipid_nm2"], measured["area_sem"]

    return iterate_ramp(measure, target=target_nm2, iterations=iterations, guess_slope=GUESS_AREA_SLOPE,
                        tolerance=tolerance, max_step_kj_mol=max_step_kj_mol, value_key="area_per_lipid_nm2", log=log,
                        what="area per lipid (zero tension), all-pair ramp, trial")
