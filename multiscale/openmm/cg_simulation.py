"""Long, resumable Langevin runs of CG Systems (and of any other System: ML/MM runs use it too).

``CGSimulation`` runs Langevin dynamics with atomic checkpoints, resumes after a crash (the DCD cut
back to the frames of the last checkpoint), restarts from the last checkpoint with fresh
velocities after a blow-up, and writes a DCD trajectory plus a PDB whose CONECT records carry the
bead bonds, and optionally an energy log (CSV, cut back like the DCD).

Units: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
from openmm import app, unit

from multiscale.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from multiscale.openmm.molecules import whole_positions
from multiscale.openmm.evaluation import degrees_of_freedom, system_masses
from multiscale.openmm.overheating import OverheatingError, check_temperature, kinetic_temperature

#: columns of the energy log (OpenMM units)
ENERGY_COLUMNS = ("step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "temperature_K", "volume_nm3")


class EnergyLog:
    """An OpenMM reporter writing one CSV row (:data:`ENERGY_COLUMNS`) every ``interval`` steps;
    the temperature from the kinetic energy and N_dof = 3N − N_constraints − 3 (with a
    CMMotionRemover; 3N − N_constraints without), as OpenMM's StateDataReporter counts them."""

    def __init__(self, path, interval: int, system: openmm.System, append: bool = False):
        self.interval = int(interval)
        self.dof = degrees_of_freedom(system)
        self.handle = open(path, "a" if append else "w")
        if not append:
            self.handle.write(",".join(ENERGY_COLUMNS) + "\n")

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["energy"]}

    def report(self, simulation, state) -> None:
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = kinetic_temperature(kinetic, self.dof)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        row = (simulation.currentStep, state.getTime().value_in_unit(unit.picosecond),
               state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), kinetic, temperature,
               float(np.linalg.det(np.asarray(box))))
        self.handle.write(f"{row[0]},{row[1]:.6f},{row[2]:.6f},{row[3]:.6f},{row[4]:.4f},{row[5]:.6f}\n")
        self.handle.flush()

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()


class CGInstabilityError(RuntimeError):
    """CG MD became unstable: NaN coordinates, or a kinetic temperature far above the thermostat's
    (:mod:`multiscale.openmm.overheating`)."""


#: the most characters of the underlying error that a :class:`CGInstabilityError` message quotes
ERROR_SUMMARY_CHARS = 300


def error_summary(error: BaseException, limit: int = ERROR_SUMMARY_CHARS) -> str:
    """One line for an error whose message may be a whole traceback (a TorchScript model's error
    reaches OpenMM as its interpreter's traceback, dozens of lines): its first line and, when
    there are more, the last line that names an error (``RuntimeError: ...``), cut to ``limit``
    characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    summary = lines[0]
    if len(lines) > 1:
        named = [line for line in lines[1:] if "Error" in line or "error" in line]
        last = named[-1] if named else lines[-1]
        if last != summary:
            summary = f"{summary} ... {last}"
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."


class CGSimulation:
    """Langevin dynamics of a CG System with checkpoint/restart.

    Files in ``out_dir`` (``name`` defaults to "cg"): ``{name}.pdb`` (first frame, bead bonds as
    CONECT records, one chain per molecule), ``{name}.dcd``, ``{name}.chk`` (OpenMM checkpoint,
    written atomically) and ``{name}_state.json`` (steps done, frames written). ``run`` resumes
    from the checkpoint when one exists: the trajectory is cut back to the frames written at that
    checkpoint, so a crash never leaves duplicated or half-written frames in the DCD.

    ``inner_steps`` > 1: multiple time stepping (:mod:`multiscale.openmm.mts`); ``timestep_ps`` is
    the outer step, the bonded forces act on ``inner_steps`` sub-steps of it.
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
        log_energies: bool = False,
        inner_steps: int = 1,
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
        self.inner_steps = int(inner_steps)
        if inner_steps == 1:
            integrator = openmm.LangevinMiddleIntegrator(temperature_K * unit.kelvin, friction_per_ps / unit.picosecond,
                                                         timestep_ps * unit.picosecond)
        else:  # multiple time stepping: bonded forces every timestep_ps / inner_steps
            from multiscale.openmm.mts import mts_langevin

            integrator = mts_langevin(system, temperature_K, friction_per_ps, timestep_ps, inner_steps)
        integrator.setRandomNumberSeed(seed + 1)
        self.simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform))
        # molecules whole: the bending–torsion terms are written in raw coordinates
        self.simulation.context.setPositions(whole_positions(system, positions_nm, None))
        self.temperature_K = float(temperature_K)
        self.seed = int(seed)
        self.topology = topology
        self.log_energies = bool(log_energies)
        self._dof, self._masses = degrees_of_freedom(system), system_masses(system)

    @property
    def paths(self):
        d, n = self.out_dir, self.name
        return {"pdb": d / f"{n}.pdb", "dcd": d / f"{n}.dcd", "chk": d / f"{n}.chk", "state": d / f"{n}_state.json",
                "energies": d / f"{n}_energies.csv"}

    def _truncate_energies(self, frames: int) -> None:
        path = self.paths["energies"]
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            if len(lines) != frames + 1:
                atomic_write_text(path, "".join(lines[: frames + 1]))

    def _save_checkpoint(self, steps: int, frames: int, wall_seconds: float) -> None:
        paths = self.paths
        atomic_write_bytes(paths["chk"], self.simulation.context.createCheckpoint())
        atomic_write_json(paths["state"], {"steps": steps, "frames": frames, "wall_seconds": wall_seconds,
                                           "inner_steps": self.inner_steps})

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

        A numerical blow-up (NaN coordinates, or a kinetic temperature far above the thermostat's at
        a checkpoint, :mod:`multiscale.openmm.overheating`) raises :class:`CGInstabilityError`, naming the
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
            if int(state.get("inner_steps", 1)) != self.inner_steps:  # a checkpoint holds its integrator's state
                raise ValueError(
                    f"{paths['chk']} was made with {state.get('inner_steps', 1)} bonded sub-steps per step and this run has "
                    f"{self.inner_steps}: run it with inner_steps={state.get('inner_steps', 1)}, or delete {paths['chk'].name}, "
                    f"{paths['state'].name} and {paths['dcd'].name} to start it over")
            done, frames = int(state["steps"]), int(state["frames"])
            wall_before = float(state.get("wall_seconds", 0.0))
            self.simulation.context.loadCheckpoint(paths["chk"].read_bytes())
            self._truncate_dcd(frames)
            self._truncate_energies(frames)
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
        if self.log_energies:
            self.simulation.reporters.append(EnergyLog(paths["energies"], self.report_interval, self.simulation.system,
                                                       append=resumed and paths["energies"].exists()))
        self.simulation.currentStep = done
        start = time.perf_counter()
        total_wall = wall_before
        saved = done if resumed else None
        segments = []  # (steps, wall seconds) of each segment between checkpoints run here
        segment_start, segment_steps = time.perf_counter(), 0
        bar = tqdm(total=steps, initial=done, desc=f"{self.name} MD", unit="step", disable=not progress)
        while done < steps:
            chunk = min(self.checkpoint_interval - done % self.checkpoint_interval, steps - done)
            try:
                self.simulation.step(chunk)
                # a run can boil with every coordinate finite; nothing hot is checkpointed
                check_temperature(self.simulation.context, self.temperature_K, what=f"{self.name} MD",
                                  timestep_ps=self.timestep_ps, dof=self._dof, masses=self._masses)
            except (openmm.OpenMMException, ValueError, OverheatingError) as error:
                # OpenMM raises on NaN coordinates (CPU/CUDA), the DCD reporter on NaN positions
                if isinstance(error, ValueError) and "NaN" not in str(error):
                    raise
                bar.close()
                for extra in self.simulation.reporters[1:]:
                    extra.close()
                self.simulation.reporters = []
                del reporter  # closes the DCD, so a restart can cut it back
                kept = (f"its last checkpoint ({paths['chk'].name}, step {saved}) and the frames before it are intact"
                        if saved is not None else "no checkpoint was written yet")
                raise CGInstabilityError(
                    f"{self.name} MD became unstable between steps {done} and {done + chunk} ({error_summary(error)}); {kept}. "
                    f"Use a smaller time step (now {self.timestep_ps} ps), or check the priors (torsions between "
                    "near-linear angles diverge) and the bead network"
                ) from error
            done += chunk
            segment_steps += chunk
            frames = done // self.report_interval
            bar.update(chunk)
            if done % self.checkpoint_interval == 0 or done == steps:
                segments.append((segment_steps, time.perf_counter() - segment_start))
                segment_start, segment_steps = time.perf_counter(), 0
                total_wall = wall_before + time.perf_counter() - start
                self._save_checkpoint(done, frames, total_wall)
                saved = done
        bar.close()
        for extra in self.simulation.reporters[1:]:
            extra.close()
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
            # the speed of each checkpoint segment run in this call: its spread shows the machine's noise
            "segment_ps_per_wall_second": [n * self.timestep_ps / t for n, t in segments if t > 0],
        }
