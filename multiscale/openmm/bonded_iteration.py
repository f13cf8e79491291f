"""Rounds of iterative Boltzmann refinement of a tabulated CG model's bonded terms, each measured
in a short Langevin run of the model itself: what the pair tables (and any ramp added after the
fit) do to the intramolecular distributions, which a force-matched or Boltzmann-inverted bonded
table cannot know. Optionally the pair tables too, from the same runs (their pair counts against
the reference's). The refinement rules are :func:`multiscale.cg.tabulated.refine_bonded` and
:func:`multiscale.cg.tabulated.refine_pairs`; this module only runs the model and measures it.

Units: nm, ps, K.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import mdtraj
import numpy as np
import openmm

from multiscale.cg.analysis import bonded_values
from multiscale.cg.priors.records import TypeKey
from multiscale.cg.analysis.pair_counts import PairCounts
from multiscale.cg.tabulated import TabulatedModel, refine_bonded, refine_pairs
from multiscale.openmm.short_runs import sample_run


def refine_bonded_in_runs(model: TabulatedModel, system_for: Callable[[TabulatedModel], openmm.System],
                          topology: mdtraj.Topology, types, positions, box,
                          reference: Mapping[str, Mapping[TypeKey, np.ndarray]], *, rounds: int, temperature_K: float,
                          steps: int, timestep_ps: float, inner_steps: int = 1, platform: str = "CPU", seed: int = 0,
                          frames: int = 40, discard: int = 10, dihedrals: bool = False, damping: float = 1.0,
                          pair_reference: Optional[PairCounts] = None,
                          count_pairs: Optional[Callable[[mdtraj.Trajectory], PairCounts]] = None,
                          pair_damping: float = 0.25, pair_smoothing_nm: float = 0.0, continue_runs: bool = False,
                          log: Optional[Callable[[str], None]] = None) -> TabulatedModel:
    """``rounds`` refinements of ``model``: each runs ``system_for(current model)`` for ``steps``
    steps from ``positions`` in ``box`` (nm), drops the first ``discard`` of ``frames`` frames,
    and moves the bond and angle tables (and, with ``dihedrals``, the bending–torsion
    coefficients) towards ``reference`` (:func:`bonded_values` of the mapped reference, grouped by
    the bead types ``types``). With ``pair_reference`` (the mapped reference's pair counts) and
    ``count_pairs`` (the same counting for a run), the pair tables move too, by ``pair_damping``
    × the inversion step, smoothed over ``pair_smoothing_nm`` (:func:`refine_pairs`).
    ``continue_runs``: each run starts where the last one ended instead of at ``positions``, so
    that a property that relaxes slower than one run (a bilayer's thickness, ~100 ps) is measured
    nearer its steady state. Returns the refined model;
    ``fit["bonded_refinements"]`` (and ``fit["pair_refinements"]``) count them."""
    if rounds < 0 or not 0 <= discard < frames:
        raise ValueError(f"need rounds >= 0 and 0 <= discard < frames, got rounds={rounds}, discard={discard}, frames={frames}")
    if (pair_reference is None) != (count_pairs is None):
        raise ValueError("refining the pair tables needs both pair_reference and count_pairs")
    current = model
    start = positions
    for k in range(rounds):
        xyz, cells = sample_run(system_for(current), start, box, temperature_K=temperature_K, steps=steps,
                                timestep_ps=timestep_ps, inner_steps=inner_steps, platform=platform, seed=seed + k,
                                frames=frames)
        if continue_runs:
            start = xyz[-1]
        traj = mdtraj.Trajectory(xyz[discard:], topology)
        traj.unitcell_vectors = cells[discard:]
        pairs_line = ""
        if pair_reference is not None:
            current = refine_pairs(current, pair_reference, count_pairs(traj), temperature_K=temperature_K,
                                   damping=pair_damping, smoothing_nm=pair_smoothing_nm)
            done = current.fit["pair_refinements"]
            deviation = done["mean_relative_count_deviation"]
            pairs_line = (f"; pair counts off by {100 * float(np.mean(list(deviation.values()) or [0.0])):.0f} % "
                          f"(mean over types), largest pair ΔU {max(done['max_abs_delta_u_kj_mol'].values(), default=0.0):.2f} kJ/mol")
        current = refine_bonded(current, reference, bonded_values(traj, types=types), temperature_K=temperature_K,
                                dihedrals=dihedrals, damping=damping)
        if log is not None:
            shifts = current.fit["bonded_refinements"]["max_abs_delta_u_kj_mol"]
            log(f"{'structure' if pair_reference is not None else 'bonded'} refinement {k + 1}/{rounds}: largest bonded ΔU "
                f"{max(shifts.values(), default=0.0):.2f} kJ/mol{pairs_line}")
    return current
