"""Coarse-grained OpenMM Systems and long, resumable CG simulations.

``build_cg_system`` returns an OpenMM System (bead masses, priors as native forces, the bead
network as a TorchForce, a periodic box) and its CG Topology. ``force_matching_set`` turns mapped
reference data into training targets F_mapped − F_prior. ``CGSimulation`` runs Langevin dynamics
with atomic checkpoints, resumes after a crash, and writes a DCD trajectory plus a PDB whose
CONECT records carry the bead bonds.

Units: nm, ps, kJ/mol, K, amu.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import app, unit

from multiscale.atomic import atomic_write_bytes, atomic_write_json
from multiscale.cg.mapping import Mapping
from multiscale.cg.priors import Priors, priors_to_openmm
from multiscale.data.configuration import Configuration


def build_cg_system(
    mapping: Mapping,
    priors: Priors,
    *,
    model=None,
    box: Optional[np.ndarray] = None,
    nonbonded_cutoff_nm: float = 1.0,
    use_angles: Optional[bool] = None,
    use_dihedrals: Optional[bool] = None,
    backend: str = "torchforce",
) -> Tuple[openmm.System, app.Topology]:
    """The CG System (priors + optional ML bead potential) and the CG Topology.

    ``box``: (3, 3) nm periodic cell (rows a, b, c), None for open boundaries.
    ``use_angles`` / ``use_dihedrals``: include angle / dihedral priors (default: whenever
    ``priors`` has any of that kind).
    """
    topology = mapping.cg_topology()
    system = openmm.System()
    for mass in mapping.bead_masses:
        if not mass > 0:
            raise ValueError("a bead has zero mass; every bead needs at least one massive atom")
        system.addParticle(float(mass) * unit.dalton)
    periodic = box is not None
    if periodic:
        box = np.asarray(box, dtype=float)
        if box.shape != (3, 3):
            raise ValueError(f"box must be (3, 3) nm, got shape {box.shape}")
        vectors = [openmm.Vec3(*map(float, row)) for row in box] * unit.nanometer
        system.setDefaultPeriodicBoxVectors(*vectors)
        topology.setPeriodicBoxVectors(vectors)
        if nonbonded_cutoff_nm >= 0.5 * min(np.linalg.norm(box, axis=1)):
            raise ValueError(
                f"nonbonded_cutoff_nm={nonbonded_cutoff_nm} is not below half the box; use a smaller cutoff or a larger system"
            )
    if use_angles is None:
        use_angles = bool(getattr(priors, "angles", None))
    if use_dihedrals is None:
        use_dihedrals = bool(getattr(priors, "dihedrals", None))
    angles = mapping.bead_angles if use_angles else []
    dihedrals = mapping.bead_dihedrals if use_dihedrals else []
    for force in priors_to_openmm(
        priors, mapping.bead_types, mapping.bead_bonds, angles, dihedrals,
        nonbonded_cutoff_nm=nonbonded_cutoff_nm, periodic=periodic,
    ):
        system.addForce(force)
    if model is not None:
        from multiscale.openmm import torch_force

        missing = sorted(set(mapping.bead_types) - set(model.type_names))
        if missing:
            raise ValueError(f"the bead network does not know bead type(s) {missing}; it was trained on {model.type_names}")
        # the box (if any) was set above from the caller's cell
        system.addForce(torch_force(model, mapping.bead_types, periodic, backend=backend, system=system, allow_default_box=True))
    return system, topology


def prior_only_system(system: openmm.System) -> openmm.System:
    """A copy of a CG System without its ML force: the priors alone."""
    from multiscale.openmm.system import clone_system, is_ml_force

    return clone_system(system, keep=lambda force: not is_ml_force(force))


def force_matching_set(
    positions: np.ndarray,
    forces: np.ndarray,
    bead_types: Sequence[str],
    prior_system: openmm.System,
    *,
    boxes: Optional[np.ndarray] = None,
    platform: str = "Reference",
) -> List[Configuration]:
    """Training targets for the bead network: mapped forces minus the priors' forces.

    ``positions`` (T, n, 3) nm and ``forces`` (T, n, 3) kJ/mol/nm are mapped CG data
    (``Mapping.map_positions`` / ``map_forces``); ``prior_system`` holds the priors only.
    """
    from multiscale.labels import OpenMMLabeller

    positions = np.asarray(positions, dtype=float)
    forces = np.asarray(forces, dtype=float)
    if positions.shape != forces.shape or positions.ndim != 3:
        raise ValueError(f"positions {positions.shape} and forces {forces.shape} must both be (frames, beads, 3)")
    configs = [
        Configuration(list(bead_types), positions[t], box=None if boxes is None else boxes[t], forces=forces[t])
        for t in range(positions.shape[0])
    ]
    priors = OpenMMLabeller(prior_system, platform=platform).label(configs).raise_on_failure()
    return [
        config.with_labels(forces=config.forces - prior.forces, energy=None, info={"target": "F_mapped - F_prior"})
        for config, prior in zip(configs, priors.configurations)
    ]


class CGInstabilityError(RuntimeError):
    """CG MD produced NaN coordinates (the integrator became unstable)."""


class CGSimulation:
    """Langevin dynamics of a CG System with checkpoint/restart.

    Files in ``out_dir`` (``name`` defaults to "cg"): ``{name}.pdb`` (first frame, bead bonds as
    CONECT records, one chain per molecule), ``{name}.dcd``, ``{name}.chk`` (OpenMM checkpoint,
    written atomically) and ``{name}_state.json`` (steps done, frames written). ``run`` resumes
    from the checkpoint when one exists: the trajectory is cut back to the frames written at that
    checkpoint, so a crash never leaves duplicated or half-written frames in the DCD.
    """

    def __init__(
        self,
        topology: app.Topology,
        system: openmm.System,
        positions_nm: np.ndarray,
        out_dir,
        *,
        name: str = "cg",
        temperature_K: float = 450.0,
        friction_per_ps: float = 1.0,
        timestep_ps: float = 0.005,
        report_interval: int = 200,
        checkpoint_interval: int = 2000,
        platform: str = "CPU",
        seed: int = 0,
    ):
        for what, value in (("report_interval", report_interval), ("checkpoint_interval", checkpoint_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{what} must be a whole number of steps >= 1, got {value!r}")
        if checkpoint_interval % report_interval:
            raise ValueError("checkpoint_interval must be a multiple of report_interval")
        if not 0 < float(timestep_ps) < 1.0:
            raise ValueError(
                f"timestep_ps={timestep_ps} is not a plausible CG time step; it is in ps (20 fs = 0.02) and must be below 1 ps"
            )
        if not float(temperature_K) > 0 or not float(friction_per_ps) > 0:
            raise ValueError(f"temperature_K ({temperature_K}) and friction_per_ps ({friction_per_ps}) must be > 0")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.report_interval = int(report_interval)
        self.checkpoint_interval = int(checkpoint_interval)
        self.timestep_ps = float(timestep_ps)
        integrator = openmm.LangevinMiddleIntegrator(temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_ps * unit.picosecond)
        integrator.setRandomNumberSeed(seed + 1)
        self.simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform))
        self.simulation.context.setPositions(np.asarray(positions_nm))
        self.temperature_K = float(temperature_K)
        self.seed = int(seed)
        self.topology = topology

    @property
    def paths(self):
        d, n = self.out_dir, self.name
        return {"pdb": d / f"{n}.pdb", "dcd": d / f"{n}.dcd", "chk": d / f"{n}.chk", "state": d / f"{n}_state.json"}

    def _save_checkpoint(self, steps: int, frames: int, wall_seconds: float) -> None:
        paths = self.paths
        atomic_write_bytes(paths["chk"], self.simulation.context.createCheckpoint())
        atomic_write_json(paths["state"], {"steps": steps, "frames": frames, "wall_seconds": wall_seconds})

    def _truncate_dcd(self, frames: int) -> None:
        import mdtraj

        dcd = self.paths["dcd"]
        if not dcd.exists():
            return
        traj = mdtraj.load_dcd(str(dcd), top=str(self.paths["pdb"]))
        if traj.n_frames == frames:
            return
        tmp = dcd.with_suffix(".tmp.dcd")
        traj[:frames].save_dcd(str(tmp))
        os.replace(tmp, dcd)

    def run(self, steps: int, *, minimize: bool = True, progress: bool = True, max_restarts: int = 0) -> dict:
        """Run to ``steps`` steps in total (resuming if a checkpoint exists); returns timings.

        A numerical blow-up (NaN coordinates) raises :class:`CGInstabilityError`, naming the
        steps and the intact checkpoint. With ``max_restarts`` > 0 the run instead goes back to the
        last checkpoint, draws fresh Maxwell–Boltzmann velocities (a new seed each time: the
        checkpoint restores the integrator's random state too, so it would fail the same way) and
        goes on, up to ``max_restarts`` times; the result's ``restarts`` counts them. Steps redone
        after a restart are counted once in the speed, their first, failed attempt not at all.
        """
        restarts = 0
        while True:
            try:
                result = self._run(steps, minimize, progress, None if restarts == 0 else self.seed + 1000 + restarts)
                result["restarts"] = restarts
                return result
            except CGInstabilityError as error:
                if restarts >= max_restarts or not self.paths["chk"].exists():
                    raise
                restarts += 1
                warnings.warn(f"{error}; restart {restarts} of {max_restarts} from the last checkpoint with fresh velocities",
                              stacklevel=2)

    def _run(self, steps: int, minimize: bool, progress: bool, fresh_velocities_seed: Optional[int]) -> dict:
        from tqdm import tqdm

        paths = self.paths
        done, frames, wall_before = 0, 0, 0.0
        resumed = paths["chk"].exists() and paths["state"].exists()
        if resumed:
            state = json.loads(paths["state"].read_text())
            done, frames = int(state["steps"]), int(state["frames"])
            wall_before = float(state.get("wall_seconds", 0.0))
            self.simulation.context.loadCheckpoint(paths["chk"].read_bytes())
            self._truncate_dcd(frames)
            if fresh_velocities_seed is not None:
                self.simulation.context.setVelocitiesToTemperature(self.temperature_K * unit.kelvin, fresh_velocities_seed)
        else:
            if minimize:
                self.simulation.minimizeEnergy(maxIterations=500)
            self.simulation.context.setVelocitiesToTemperature(self.temperature_K * unit.kelvin, self.seed + 2)
            positions = self.simulation.context.getState(getPositions=True).getPositions()
            with open(paths["pdb"], "w") as handle:
                app.PDBFile.writeFile(self.topology, positions, handle, keepIds=True)
        reporter = app.DCDReporter(str(paths["dcd"]), self.report_interval, append=resumed and paths["dcd"].exists())
        self.simulation.reporters = [reporter]
        self.simulation.currentStep = done
        start = time.perf_counter()
        total_wall = wall_before
        saved = done if resumed else None
        bar = tqdm(total=steps, initial=done, desc=f"{self.name} MD", unit="step", disable=not progress)
        while done < steps:
            chunk = min(self.checkpoint_interval - done % self.checkpoint_interval, steps - done)
            try:
                self.simulation.step(chunk)
            except (openmm.OpenMMException, ValueError) as error:
                # OpenMM raises on NaN coordinates (CPU/CUDA), the DCD reporter on NaN positions
                if isinstance(error, ValueError) and "NaN" not in str(error):
                    raise
                bar.close()
                self.simulation.reporters = []
                del reporter  # closes the DCD, so a restart can cut it back
                kept = (f"its last checkpoint ({paths['chk'].name}, step {saved}) and the frames before it are intact"
                        if saved is not None else "no checkpoint was written yet")
                raise CGInstabilityError(
                    f"{self.name} MD became unstable between steps {done} and {done + chunk} ({error}); {kept}. "
                    f"Use a smaller time step (now {self.timestep_ps} ps), or check the priors (torsions between "
                    "near-linear angles diverge) and the bead network"
                ) from error
            done += chunk
            frames = done // self.report_interval
            bar.update(chunk)
            if done % self.checkpoint_interval == 0 or done == steps:
                total_wall = wall_before + time.perf_counter() - start
                self._save_checkpoint(done, frames, total_wall)
                saved = done
        bar.close()
        del reporter
        self.simulation.reporters = []
        elapsed = time.perf_counter() - start
        # The speed covers every segment that was checkpointed (steps since the last checkpoint of
        # an interrupted segment were redone and are not counted twice), so a finished run that is
        # "resumed" with nothing left to do still reports its measured speed.
        return {
            "steps": done,
            "resumed": resumed,
            "wall_seconds": elapsed,
            "total_wall_seconds": total_wall,
            "simulated_ps_per_wall_second": (done * self.timestep_ps) / total_wall if total_wall > 0 else float("nan"),
        }
