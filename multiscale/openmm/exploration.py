"""Exploration MD for active learning: Langevin dynamics driven by an ensemble's mean force,
recording each frame's ensemble uncertainty, with an optional flat-bottom restraint that keeps a
cluster together, and the stops (uncertainty ceiling, broken bonds, blow-ups) that end a
trajectory before the model's artefacts take over.

Units: nm, fs (time step), K, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import openmm
from openmm import app, unit

from multiscale.models.ensemble import EnsemblePotential
from multiscale.openmm.assembly import EnsembleTerm, ForceTerm, assemble_system
from multiscale.openmm.reporters import EnsembleUncertaintyReporter
from multiscale.openmm.system import topology_types

PathLike = Union[str, "os.PathLike[str]"]

#: frame scores: "max" (largest per-particle force uncertainty) or "mean"
UNCERTAINTY_KEYS = {"max": "max_force_uncertainty", "mean": "mean_force_uncertainty"}


class Exploration(list):
    """The frames of an exploration (a list of dicts, see :func:`explore`), plus how it ended.

    Attributes: ``steps_requested``, ``steps_completed`` (MD steps done), ``blew_up`` (True when
    a trajectory ended early on an OpenMM error or non-finite positions/energies), ``error``
    (that message, or None), ``stopped`` (True when a trajectory was ended because a frame's
    uncertainty exceeded ``stop_uncertainty``), ``broken_bond`` (True when one was ended because
    a Topology bond broke, see ``max_bond_stretch``), ``stop_reason`` (the message of either, or
    None), ``trajectories`` (how many trajectories the frames come from; each frame's
    ``trajectory`` key says which).
    """

    def __init__(
        self,
        frames=(),
        *,
        steps_requested: int = 0,
        steps_completed: int = 0,
        blew_up: bool = False,
        error: Optional[str] = None,
        stopped: bool = False,
        broken_bond: bool = False,
        stop_reason: Optional[str] = None,
        trajectories: int = 1,
    ):
        super().__init__(frames)
        self.steps_requested = int(steps_requested)
        self.steps_completed = int(steps_completed)
        self.blew_up = bool(blew_up)
        self.error = error
        self.stopped = bool(stopped)
        self.broken_bond = bool(broken_bond)
        self.stop_reason = stop_reason
        self.trajectories = int(trajectories)


def _box_nm(box) -> np.ndarray:
    """(3, 3) nm of a Topology's periodic box vectors (rows a, b, c)."""
    return np.array([[float(c) for c in vector] for vector in box.value_in_unit(unit.nanometer)], dtype=np.float64)


def _openmm_seed(seed: int) -> int:
    """OpenMM treats a random seed of 0 as 'pick one at random'; map every seed to 1..2³¹−1."""
    return int(seed) % (2**31 - 1) + 1


def _masses(topology, masses) -> List[float]:
    atoms = list(topology.atoms())
    if masses is not None:
        masses = [float(m) for m in masses]
        if len(masses) != len(atoms):
            raise ValueError(f"masses has {len(masses)} entries for a Topology of {len(atoms)} atoms; give one mass (amu) per atom")
        if not all(math.isfinite(m) and m > 0 for m in masses):
            raise ValueError("masses must be positive numbers in amu (dalton)")
        return masses
    out = []
    for atom in atoms:
        if atom.element is None:
            raise ValueError(
                f"atom {atom.index} ({atom.name!r}) has no element, so its mass is unknown; "
                "pass masses=[...] (amu, one per atom) to explore()"
            )
        out.append(float(atom.element.mass.value_in_unit(atom.element.mass.unit)))
    return out


def flat_bottom_restraint(
    num_particles: int,
    radius_nm: float,
    force_constant: float,
    center: Union[str, Sequence[float]] = "com",
    masses: Optional[Sequence[float]] = None,
    particles: Optional[Sequence[int]] = None,
):
    """A flat-bottom spherical restraint that keeps a cluster together (OpenMM Force).

    Every particle i feels ``E_i = ½ k max(0, d_i − R)²`` (kJ/mol) with ``d_i`` its distance
    (nm) from the centre, ``R = radius_nm`` and ``k = force_constant`` (kJ/mol/nm²): zero inside
    the sphere, harmonic outside. ``center="com"``: the mass-weighted centre of all particles,
    recomputed every step (translation-invariant; a CustomCentroidBondForce between each
    particle and the whole system; needs ``masses``); ``"origin"`` or a point ``(x, y, z)`` nm:
    a fixed point (CustomExternalForce). The restraint is a sampling bias only: labels never
    include it. Choose R a few tenths of a nm larger than the cluster so that it only acts on
    molecules that are leaving. ``particles``: the restrained particles (default: all), which
    also make up the centre of ``"com"`` (e.g. only the water oxygens of a cluster).
    """
    import openmm

    radius_nm, force_constant = float(radius_nm), float(force_constant)
    if not (math.isfinite(radius_nm) and radius_nm > 0):
        raise ValueError(f"restraint radius must be a positive distance in nm, got {radius_nm!r}")
    if not (math.isfinite(force_constant) and force_constant > 0):
        raise ValueError(f"restraint force constant must be positive (kJ/mol/nm²), got {force_constant!r}")
    chosen = list(range(num_particles)) if particles is None else [int(i) for i in particles]
    if not chosen or len(set(chosen)) != len(chosen) or min(chosen) < 0 or max(chosen) >= num_particles:
        raise ValueError(f"restrained particles must be distinct indices in 0..{num_particles - 1}, got {particles!r}")
    if isinstance(center, str) and center == "com":
        if masses is None or len(masses) != num_particles:
            raise ValueError("a centre-of-mass restraint needs one mass per particle (masses=[...] in amu)")
        force = openmm.CustomCentroidBondForce(2, "0.5*k_restraint*max(0, distance(g1, g2) - r_restraint)^2")
        everyone = force.addGroup(chosen, [float(masses[i]) for i in chosen])
        for i in chosen:
            group = force.addGroup([i], [1.0])
            force.addBond([group, everyone], [])
    else:
        if isinstance(center, str) and center != "origin":
            raise ValueError(f"restraint center must be 'com', 'origin' or a point (x, y, z) in nm, got {center!r}")
        try:
            point = np.zeros(3) if isinstance(center, str) else np.asarray(center, dtype=float)
        except (TypeError, ValueError):
            point = None
        if point is None or point.shape != (3,) or not np.all(np.isfinite(point)):
            raise ValueError(f"restraint center point must be three finite coordinates in nm, got {center!r}")
        force = openmm.CustomExternalForce(
            "0.5*k_restraint*max(0, sqrt((x-cx)^2 + (y-cy)^2 + (z-cz)^2) - r_restraint)^2"
        )
        for name, value in zip(("cx", "cy", "cz"), point):
            force.addGlobalParameter(name, float(value))
        for i in chosen:
            force.addParticle(i, [])
    force.addGlobalParameter("k_restraint", force_constant)
    force.addGlobalParameter("r_restraint", radius_nm)
    force.setName("flat-bottom spherical restraint")
    return force


def explore(
    ensemble: EnsemblePotential,
    topology,
    positions_nm,
    particle_types: Optional[Sequence[str]] = None,
    *,
    steps: int,
    report_interval: int,
    temperature: float,
    timestep_fs: float,
    seed: int,
    friction_per_ps: float = 5.0,
    restraint_radius_nm: Optional[float] = None,
    restraint_force_constant: float = 5000.0,
    restraint_center: Union[str, Sequence[float]] = "com",
    stop_uncertainty: Optional[float] = None,
    score: str = "max",
    max_bond_stretch: Optional[float] = None,
    masses: Optional[Sequence[float]] = None,
    platform: str = "CPU",
    platform_properties: Optional[Dict[str, str]] = None,
    backend: str = "torchforce",
    csv_file: Optional[PathLike] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Exploration:
    """Langevin MD driven by the ensemble-mean force; every reported frame, with its uncertainty.

    Parameters
    ----------
    ensemble: the :class:`EnsemblePotential` (≥ 2 members) whose mean force drives the MD and
        whose spread is recorded.
    topology: OpenMM Topology (masses from its elements unless ``masses`` is given; periodic iff
        it has box vectors).
    positions_nm: (N, 3) start positions, nm.
    particle_types: type name per atom (default: element symbols, see ``topology_types``).
    steps, report_interval: MD steps, and steps between frames (first frame at step
        ``report_interval``; the start is not a frame).
    temperature, timestep_fs, friction_per_ps: LangevinMiddleIntegrator settings (K, fs, 1/ps).
    seed: seeds the initial velocities and the Langevin noise.
    restraint_radius_nm, restraint_force_constant, restraint_center: optional flat-bottom
        spherical restraint for clusters, see :func:`flat_bottom_restraint` (open boundaries only).
    stop_uncertainty: end the trajectory at the first frame whose ``score`` ("max" or "mean"
        force uncertainty, kJ/mol/nm) exceeds this; that frame is kept and ``stopped`` is set.
    max_bond_stretch: end the trajectory at the first frame in which a bond of the Topology is
        longer than this factor times its length at the start (e.g. 1.5): a covalent bond has
        broken. The ensemble spread can miss that — all members may agree on a wrong, smooth
        dissociation, and a reference method then often fails (open-shell fragments). That frame
        is dropped; ``broken_bond`` and ``stop_reason`` say what broke. Needs Topology bonds.
    platform, platform_properties, backend: OpenMM platform and ``ensemble_force`` backend.
    csv_file: where the :class:`EnsembleUncertaintyReporter` writes its CSV (default: in memory).
    log: called with a message when the trajectory blows up (default: ``warnings.warn``).

    Returns an :class:`Exploration`: a list of dicts, one per reported frame, with ``step``,
    ``time_ps``, ``positions`` (numpy (N, 3) nm), ``box`` ((3, 3) nm or None),
    ``max_force_uncertainty`` and ``mean_force_uncertainty`` (kJ/mol/nm, over particles),
    ``energy`` and ``energy_std`` (kJ/mol), ``trajectory`` (0). A frame whose uncertainty is
    exactly 0 (e.g. every atom beyond the cutoff of every other) is not kept. A blow-up — an OpenMMException (e.g. NaN
    coordinates) or non-finite positions/energies/uncertainties — ends the trajectory early;
    the frames recorded before it are kept (they are often the most uncertain ones) and
    ``blew_up``/``error`` say what happened.
    """
    import io

    if not isinstance(ensemble, EnsemblePotential):
        raise TypeError(f"explore needs an EnsemblePotential, got {type(ensemble).__name__}; wrap members with EnsemblePotential([...])")
    if ensemble.num_members < 2:
        raise ValueError(
            "explore needs an ensemble of at least 2 members: a single member has zero force uncertainty, "
            "so no frame could be ranked; train more members"
        )
    steps, report_interval = int(steps), int(report_interval)
    if steps < 1 or report_interval < 1:
        raise ValueError(f"steps and report_interval must be >= 1, got steps={steps}, report_interval={report_interval}")
    positions_nm = np.asarray(positions_nm, dtype=np.float64)
    n = topology.getNumAtoms()
    if positions_nm.shape != (n, 3):
        raise ValueError(f"positions_nm has shape {positions_nm.shape} but the Topology has {n} atoms; expected ({n}, 3) in nm")
    if not np.all(np.isfinite(positions_nm)):
        raise ValueError("positions_nm contains NaN or Inf")
    types = list(particle_types) if particle_types is not None else topology_types(topology)
    if len(types) != n:
        raise ValueError(f"particle-count mismatch: {len(types)} particle_types for a Topology of {n} atoms")
    box = topology.getPeriodicBoxVectors()
    periodic = box is not None
    if periodic and restraint_radius_nm is not None:
        raise ValueError(
            "a spherical restraint is for clusters with open boundaries; this Topology is periodic — drop restraint_radius_nm"
        )
    atom_masses = _masses(topology, masses)
    if score not in UNCERTAINTY_KEYS:
        raise ValueError(f"score must be one of {sorted(UNCERTAINTY_KEYS)}, got {score!r}")
    if stop_uncertainty is not None and not (math.isfinite(float(stop_uncertainty)) and float(stop_uncertainty) > 0):
        raise ValueError(f"stop_uncertainty must be a positive force uncertainty in kJ/mol/nm or None, got {stop_uncertainty!r}")
    bonds = None
    if max_bond_stretch is not None:
        max_bond_stretch = float(max_bond_stretch)
        if not (math.isfinite(max_bond_stretch) and max_bond_stretch > 1.0):
            raise ValueError(f"max_bond_stretch must be a factor > 1 (e.g. 1.5) or None, got {max_bond_stretch!r}")
        bonds = np.array([[a.index, b.index] for a, b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
        if not len(bonds):
            raise ValueError(
                "max_bond_stretch needs the Topology's bonds, but it has none; add them (topology.addBond) "
                "or pass max_bond_stretch=None"
            )
        reference_lengths = np.linalg.norm(positions_nm[bonds[:, 0]] - positions_nm[bonds[:, 1]], axis=1)

    terms = [EnsembleTerm(ensemble, types, periodic, backend=backend)]  # its box: the Topology's, set below
    if restraint_radius_nm is not None:
        terms.append(ForceTerm(flat_bottom_restraint(n, restraint_radius_nm, restraint_force_constant, restraint_center,
                                                     atom_masses)))
    system = assemble_system(atom_masses, box_nm=_box_nm(box) if periodic else None, terms=terms, allow_zero_mass=True)
    integrator = openmm.LangevinMiddleIntegrator(
        float(temperature) * unit.kelvin, float(friction_per_ps) / unit.picosecond, float(timestep_fs) * unit.femtosecond
    )
    integrator.setRandomNumberSeed(_openmm_seed(seed))
    try:
        plat = openmm.Platform.getPlatformByName(platform)
    except Exception:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise ValueError(f"unknown OpenMM platform {platform!r}; available: {names}") from None
    simulation = app.Simulation(topology, system, integrator, plat, dict(platform_properties or {}))
    simulation.context.setPositions(positions_nm)
    simulation.context.setVelocitiesToTemperature(float(temperature) * unit.kelvin, _openmm_seed(seed + 7919))

    sink = io.StringIO() if csv_file is None else csv_file
    reporter = EnsembleUncertaintyReporter(
        sink, report_interval, ensemble, types, threshold=0.0, periodic=periodic, keep_flagged_positions=True
    )
    simulation.reporters.append(reporter)
    score_column = {"max": "max_force_uncertainty_kj_mol_nm", "mean": "mean_force_uncertainty_kj_mol_nm"}[score]
    error = None
    stopped = False
    broken = None
    try:
        while simulation.currentStep < steps:
            chunk = min(report_interval - simulation.currentStep % report_interval, steps - simulation.currentStep)
            simulation.step(chunk)
            if reporter.records and reporter.records[-1]["step"] == simulation.currentStep:
                last = reporter.records[-1]
                values = (last["energy_mean_kj_mol"], last["max_force_uncertainty_kj_mol_nm"])
                if not all(math.isfinite(v) for v in values) or (
                    reporter.frames and not np.all(np.isfinite(reporter.frames[-1]))
                ):
                    error = f"non-finite energy, uncertainty or positions at step {simulation.currentStep}"
                    break
                if bonds is not None and reporter.flagged_steps and reporter.flagged_steps[-1] == simulation.currentStep:
                    last_positions = reporter.frames[-1]
                    lengths = np.linalg.norm(last_positions[bonds[:, 0]] - last_positions[bonds[:, 1]], axis=1)
                    ratio = lengths / reference_lengths
                    if ratio.max() > max_bond_stretch:
                        worst = int(np.argmax(ratio))
                        i, j = (int(x) for x in bonds[worst])
                        broken = (
                            f"bond {types[i]}{i}-{types[j]}{j} at {lengths[worst]:.3f} nm ({ratio[worst]:.2f}x its "
                            f"{reference_lengths[worst]:.3f} nm at the start) at step {simulation.currentStep}"
                        )
                        break
                if stop_uncertainty is not None and last[score_column] > stop_uncertainty:
                    stopped = True
                    break
    except openmm.OpenMMException as exc:
        error = f"OpenMMException at step ~{simulation.currentStep}: {str(exc).strip()}"
    except (RuntimeError, ValueError, FloatingPointError) as exc:  # e.g. the neighbour list on exploded coordinates
        error = f"{type(exc).__name__} at step ~{simulation.currentStep}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        reporter.close()

    frames = []
    by_step = dict(zip(reporter.flagged_steps, reporter.frames))
    if broken is not None:  # the frame with the broken bond is not a candidate
        by_step.pop(int(simulation.currentStep), None)
    box_array = None if not periodic else np.asarray(box.value_in_unit(unit.nanometer), dtype=np.float64)
    for record in reporter.records:
        positions = by_step.get(record["step"])
        if positions is None:  # uncertainty exactly 0 (not flagged), or a frame we could not keep
            continue
        values = (
            record["energy_mean_kj_mol"],
            record["energy_std_kj_mol"],
            record["max_force_uncertainty_kj_mol_nm"],
            record["mean_force_uncertainty_kj_mol_nm"],
        )
        if not all(math.isfinite(v) for v in values) or not np.all(np.isfinite(positions)):
            continue
        frames.append(
            {
                "step": int(record["step"]),
                "time_ps": float(record["time_ps"]),
                "positions": positions,
                "box": None if box_array is None else box_array.copy(),
                "max_force_uncertainty": float(record["max_force_uncertainty_kj_mol_nm"]),
                "mean_force_uncertainty": float(record["mean_force_uncertainty_kj_mol_nm"]),
                "energy": float(record["energy_mean_kj_mol"]),
                "energy_std": float(record["energy_std_kj_mol"]),
                "trajectory": 0,
            }
        )
    completed = int(simulation.currentStep) if error is None else (frames[-1]["step"] if frames else 0)
    if stopped:
        stop_reason = f"{score} force uncertainty above {stop_uncertainty} kJ/mol/nm at step {completed}"
    elif broken is not None:
        stop_reason = f"a bond broke: {broken}"
    else:
        stop_reason = None
    result = Exploration(
        frames, steps_requested=steps, steps_completed=completed, blew_up=error is not None, error=error,
        stopped=stopped, broken_bond=broken is not None, stop_reason=stop_reason,
    )
    if error is not None:
        message = (
            f"exploration blew up ({error}); the trajectory ended after {completed} of {steps} steps and keeps "
            f"the {len(frames)} frames recorded before it (often the most uncertain ones)"
        )
        (log or (lambda m: warnings.warn(m, RuntimeWarning, stacklevel=3)))(message)
    return result
