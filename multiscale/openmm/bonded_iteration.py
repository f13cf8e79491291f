"""Rounds of iterative Boltzmann refinement of a tabulated CG model's bonded terms, each measured
in a short Langevin run of the model itself: what the pair tables (and any ramp added after the
fit) do to the intramolecular distributions, which a force-matched or Boltzmann-inverted bonded
table cannot know. Optionally the pair tables too, from the same runs (their pair counts against
the reference's). The refinement rules are :func:`multiscale.cg.tabulated.refine_bonded` and
:func:`multiscale.cg.tabulated.refine_pairs`; this module only runs the model and measures it.

Units: nm, ps, K.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Tuple

import mdtraj
import numpy as np
import openmm

from multiscale.cg.analysis import bonded_values, chain_pair_values
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
                          pair_damping: float = 0.25, pair_smoothing_nm: float = 0.0, pair_trust: str = "both",
                          continue_runs: bool = False,
                          average_last: int = 0, adjust: Optional[Callable[[TabulatedModel, TabulatedModel, mdtraj.Trajectory],
                                                                           Tuple[TabulatedModel, str]]] = None,
                          log: Optional[Callable[[str], None]] = None) -> TabulatedModel:
    """``rounds`` refinements of ``model``: each runs ``system_for(current model)`` for ``steps``
    steps from ``positions`` in ``box`` (nm), drops the first ``discard`` of ``frames`` frames,
    and moves the bond and angle tables (and, with ``dihedrals``, the bending–torsion
    coefficients) towards ``reference`` (:func:`bonded_values` of the mapped reference, grouped by
    the bead types ``types``; with its "chain_pair" distances, :func:`chain_pair_values`, when
    the model has chain-pair tables). With ``pair_reference`` (the mapped reference's pair counts) and
    ``count_pairs`` (the same counting for a run), the pair tables move too, by ``pair_damping``
    × the inversion step, smoothed over ``pair_smoothing_nm``, on the bins ``pair_trust`` says
    (:func:`refine_pairs`).
    ``continue_runs``: each run starts where the last one ended instead of at ``positions``, so
    that a property that relaxes slower than one run (a bilayer's thickness, ~100 ps) is measured
    nearer its steady state. ``average_last``: the model returned is the mean of the models after
    the last ``average_last`` rounds (their tables and bending–torsion coefficients; 0 or 1: the
    last model), iterate averaging, which cancels the round-to-round swing of coupled refinements
    and the runs' noise. ``adjust(ran, refined, traj)``: called after each round's refinement
    with the model that ran, the refined model and the round's frames; returns the model the next
    round runs and a note for the log line (e.g. a pressure correction of the refined model from
    the ran model's pressure on those frames, :func:`~multiscale.openmm.pressure.fit_pressure_correction`).
    Returns the refined model;
    ``fit["bonded_refinements"]`` (and ``fit["pair_refinements"]``) count them."""
    if average_last < 0:
        raise ValueError(f"average_last must be >= 0 rounds, got {average_last}")
    if rounds < 0 or not 0 <= discard < frames:
        raise ValueError(f"need rounds >= 0 and 0 <= discard < frames, got rounds={rounds}, discard={discard}, frames={frames}")
    if model.chain_pairs and not reference.get("chain_pair"):
        raise ValueError("the model has chain-pair tables but reference has no 'chain_pair' distances; add "
                         "reference['chain_pair'] = chain_pair_values(mapped reference, separations, types=...)")
    if (pair_reference is None) != (count_pairs is None):
        raise ValueError("refining the pair tables needs both pair_reference and count_pairs")
    current = model
    start = positions
    history = []
    for k in range(rounds):
        ran = current
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
                                   damping=pair_damping, smoothing_nm=pair_smoothing_nm, trust=pair_trust)
            done = current.fit["pair_refinements"]
            deviation = done["mean_relative_count_deviation"]
            pairs_line = (f"; pair counts off by {100 * float(np.mean(list(deviation.values()) or [0.0])):.0f} % "
                          f"(mean over types), largest pair ΔU {max(done['max_abs_delta_u_kj_mol'].values(), default=0.0):.2f} kJ/mol")
        sampled = bonded_values(traj, types=types)
        if current.chain_pairs:
            sampled["chain_pair"] = chain_pair_values(traj, sorted({key[0] for key in current.chain_pairs}), types=types)
        current = refine_bonded(current, reference, sampled, temperature_K=temperature_K, dihedrals=dihedrals,
                                damping=damping)
        adjusted = ""
        if adjust is not None:
            current, adjusted = adjust(ran, current, traj)
            adjusted = f"; {adjusted}" if adjusted else ""
        if log is not None:
            shifts = current.fit["bonded_refinements"]["max_abs_delta_u_kj_mol"]
            chain_line = ""
            if "chain_pair" in sampled:
                off = {key: 100.0 * (np.mean(values) / np.mean(reference["chain_pair"][key]) - 1.0)
                       for key, values in sampled["chain_pair"].items() if key in reference["chain_pair"]}
                chain_line = "; chain pairs' mean distance off by " + ", ".join(
                    f"{v:+.1f} % (1-{key[0] + 1} {'-'.join(key[1:])})" for key, v in sorted(off.items()))
            log(f"{'structure' if pair_reference is not None else 'bonded'} refinement {k + 1}/{rounds}: largest bonded ΔU "
                f"{max(shifts.values(), default=0.0):.2f} kJ/mol{pairs_line}{chain_line}{adjusted}")
        history.append(current)
    if average_last > 1 and len(history) > 1:
        current = averaged_model(history[-average_last:])
    return current


def averaged_model(models) -> TabulatedModel:
    """The mean of ``models`` (refinements of one model: the same tables on the same knots): each
    table's forces and each bending–torsion type's coefficients averaged; everything else (ramps,
    fit records) is the last model's, with ``fit["bonded_refinements"]["averaged_over_last"]``."""
    import copy

    from multiscale.cg.tabulated import Table

    out = copy.deepcopy(models[-1])
    for name in ("pairs", "bonds", "angles", "chain_pairs"):
        tables = getattr(out, name)
        for key, table in tables.items():
            forces = np.mean([getattr(m, name)[key].force for m in models], axis=0)
            tables[key] = Table(table.kind, table.knots, forces, table.wall, samples=table.samples)
    for key in out.dihedrals:
        out.dihedrals[key] = np.mean([np.asarray(m.dihedrals[key], dtype=np.float64) for m in models], axis=0)
    out.fit = {**out.fit, "bonded_refinements": {**out.fit.get("bonded_refinements", {}), "averaged_over_last": len(models)}}
    return out
