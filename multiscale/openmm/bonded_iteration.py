"""Rounds of iterative Boltzmann refinement of a tabulated CG model's bonded terms, each measured
in a short Langevin run of the model itself: what the pair tables (and any ramp added after the
fit) do to the intramolecular distributions, which a force-matched or Boltzmann-inverted bonded
table cannot know. The refinement rule is :func:`multiscale.cg.tabulated.refine_bonded`; this
module only runs the model and measures it.

Units: nm, ps, K.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import mdtraj
import numpy as np
import openmm

from multiscale.cg.analysis import bonded_values
from multiscale.cg.priors.records import TypeKey
from multiscale.cg.tabulated import TabulatedModel, refine_bonded
from multiscale.openmm.short_runs import sample_run


def refine_bonded_in_runs(model: TabulatedModel, system_for: Callable[[TabulatedModel], openmm.System],
                          topology: mdtraj.Topology, types, positions, box,
                          reference: Mapping[str, Mapping[TypeKey, np.ndarray]], *, rounds: int, temperature_K: float,
                          steps: int, timestep_ps: float, inner_steps: int = 1, platform: str = "CPU", seed: int = 0,
                          frames: int = 40, discard: int = 10, dihedrals: bool = False, damping: float = 1.0,
                          log: Optional[Callable[[str], None]] = None) -> TabulatedModel:
    """``rounds`` refinements of ``model``: each runs ``system_for(current model)`` for ``steps``
    steps from ``positions`` in ``box`` (nm), drops the first ``discard`` of ``frames`` frames,
    and moves the bond and angle tables (and, with ``dihedrals``, the bending–torsion
    coefficients) towards ``reference`` (:func:`bonded_values` of the mapped reference, grouped by
    the bead types ``types``). Returns the refined model; ``fit["bonded_refinements"]`` counts them."""
    if rounds < 0 or not 0 <= discard < frames:
        raise ValueError(f"need rounds >= 0 and 0 <= discard < frames, got rounds={rounds}, discard={discard}, frames={frames}")
    current = model
    for k in range(rounds):
        xyz, cells = sample_run(system_for(current), positions, box, temperature_K=temperature_K, steps=steps,
                                timestep_ps=timestep_ps, inner_steps=inner_steps, platform=platform, seed=seed + k,
                                frames=frames)
        traj = mdtraj.Trajectory(xyz[discard:], topology)
        traj.unitcell_vectors = cells[discard:]
        current = refine_bonded(current, reference, bonded_values(traj, types=types), temperature_K=temperature_K,
                                dihedrals=dihedrals, damping=damping)
        if log is not None:
            shifts = current.fit["bonded_refinements"]["max_abs_delta_u_kj_mol"]
            log(f"bonded refinement {k + 1}/{rounds}: largest ΔU {max(shifts.values(), default=0.0):.2f} kJ/mol")
    return current
