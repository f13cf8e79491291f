"""OpenMM reporters for ML potentials.

:class:`EnsembleUncertaintyReporter` evaluates an :class:`~multiscale.models.ensemble.EnsemblePotential`
every ``reportInterval`` steps on the simulation's current positions and logs the ensemble
spread (epistemic uncertainty) to CSV; frames whose largest per-particle force uncertainty
exceeds a threshold are flagged (and optionally kept) as candidates for active learning.

Units: positions nm, time ps, energies kJ/mol, forces kJ/mol/nm.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Union

import numpy as np
import torch

from openmm import unit

from multiscale.models.ensemble import EnsemblePotential
from multiscale.openmm.bridge import check_particle_selection

#: the CSV columns, in order
COLUMNS = (
    "step",
    "time_ps",
    "energy_mean_kj_mol",
    "energy_std_kj_mol",
    "max_force_uncertainty_kj_mol_nm",
    "mean_force_uncertainty_kj_mol_nm",
    "flagged",
)


class EnsembleUncertaintyReporter:
    """Log the ensemble's energy mean/spread and force uncertainty during an OpenMM Simulation.

    Parameters
    ----------
    file: path of the CSV file, or an open text file object (not closed by the reporter).
    reportInterval: report every this many steps (at steps that are multiples of it).
    ensemble: the :class:`EnsemblePotential` to watch (typically the one driving the simulation
        through :func:`multiscale.openmm.ensemble_force`).
    particle_types: type name of each watched particle (all System particles, or those in
        ``particles``, in that order).
    threshold: force-uncertainty threshold in kJ/mol/nm; a frame is flagged when its largest
        per-particle force uncertainty is strictly greater.
    particles: optional System indices of the particles the ensemble acts on; None → all.
    periodic: evaluate with the Context's periodic box (nm). None → follow the System
        (``usesPeriodicBoundaryConditions()``); give the same value as to ``ensemble_force``.
    keep_flagged_positions: also keep the positions (nm, numpy (n, 3), the watched particles
        only) of each flagged frame in :attr:`frames`, parallel to :attr:`flagged_steps`.
    append: append to an existing file (e.g. when resuming from a checkpoint): no header is
        written if the file already has one (which must then be this reporter's header).
        False (default) starts a new file, overwriting any old one.

    CSV row per report (flushed immediately, so a crash loses no written row)::

        step,time_ps,energy_mean_kj_mol,energy_std_kj_mol,max_force_uncertainty_kj_mol_nm,
        mean_force_uncertainty_kj_mol_nm,flagged

    where the uncertainties are ``force_uncertainty`` of :meth:`EnsemblePotential.compute`
    (sqrt(mean over members of |F_m,i − F̄_i|²), population spread) maximised / averaged over the
    watched particles, and ``flagged`` is 1 or 0. The same values are kept in :attr:`records`
    (list of dicts with the CSV column names as keys; ``flagged`` a bool).

    Positions are requested unwrapped (``'periodic': False``): what the Force itself sees. The
    ensemble's energy and forces do not depend on the wrapping when ``periodic`` is true.
    """

    def __init__(
        self,
        file: Union[str, "os.PathLike[str]", TextIO],
        reportInterval: int,
        ensemble: EnsemblePotential,
        particle_types: Sequence[str],
        *,
        threshold: float,
        particles: Optional[Sequence[int]] = None,
        periodic: Optional[bool] = None,
        keep_flagged_positions: bool = False,
        append: bool = False,
    ):
        if not isinstance(ensemble, EnsemblePotential):
            raise TypeError(
                f"ensemble must be an EnsemblePotential, got {type(ensemble).__name__}; "
                "build one with EnsemblePotential([...]) or load_ensemble(directory)"
            )
        interval = int(reportInterval)
        if interval != reportInterval or interval < 1:
            raise ValueError(f"reportInterval must be a positive whole number of steps, got {reportInterval!r}")
        threshold = float(threshold)
        if not threshold >= 0.0:
            raise ValueError(f"threshold must be a non-negative force uncertainty in kJ/mol/nm, got {threshold!r}")
        particle_types, particles = check_particle_selection(particle_types, particles, "the reporter")
        self._types = ensemble.type_indices(particle_types)  # raises naming unknown types
        self._particles = None if particles is None else np.asarray(particles, dtype=np.int64)
        self._interval = interval
        self.ensemble = ensemble
        self.threshold = threshold
        self.periodic = periodic
        self.keep_flagged_positions = bool(keep_flagged_positions)
        self.records: List[Dict[str, Any]] = []
        self.flagged_steps: List[int] = []
        self.frames: List[np.ndarray] = []
        self._checked = False

        if isinstance(file, (str, os.PathLike)):
            path = Path(file)
            has_content = append and path.is_file() and path.stat().st_size > 0
            if has_content:
                self._check_existing_header(path)
            self._out: TextIO = open(path, "a" if append else "w", newline="", encoding="utf-8")
            self._own_file = True
            if has_content and not _ends_with_newline(path):
                self._out.write("\n")  # a row cut short by a crash stays on its own line
        else:
            self._out = file
            self._own_file = False
            has_content = append
        self._writer = csv.writer(self._out, lineterminator="\n")
        if not has_content:
            self._writer.writerow(COLUMNS)
            self._out.flush()

    @staticmethod
    def _check_existing_header(path: Path) -> None:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
        if header is None or tuple(header) != COLUMNS:
            raise ValueError(
                f"cannot append to {path}: its header {header} is not this reporter's columns {list(COLUMNS)}; "
                "choose another file or pass append=False to overwrite it"
            )

    # ------------------------------------------------------------------ OpenMM reporter protocol
    def describeNextReport(self, simulation) -> Dict[str, Any]:
        """Steps until the next report, and what the State must contain (positions, unwrapped)."""
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def report(self, simulation, state) -> None:
        """Evaluate the ensemble on ``state``'s positions and append one CSV row."""
        periodic = self.periodic
        if periodic is None:
            periodic = bool(simulation.system.usesPeriodicBoundaryConditions())
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
        if not self._checked:
            self._check_particles(positions.shape[0])
        if self._particles is not None:
            positions = positions[self._particles]
        box = None
        if periodic:
            box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
        out = self.ensemble.compute(positions, self._types, box, forces=True)
        uncertainty = out["force_uncertainty"].to(torch.float64).cpu().numpy()
        step = int(simulation.currentStep)
        record: Dict[str, Any] = {
            "step": step,
            "time_ps": float(state.getTime().value_in_unit(unit.picosecond)),
            "energy_mean_kj_mol": float(out["energy"]),
            "energy_std_kj_mol": float(out["energy_std"]),
            "max_force_uncertainty_kj_mol_nm": float(uncertainty.max()),
            "mean_force_uncertainty_kj_mol_nm": float(uncertainty.mean()),
        }
        record["flagged"] = bool(record["max_force_uncertainty_kj_mol_nm"] > self.threshold)
        self.records.append(record)
        if record["flagged"]:
            self.flagged_steps.append(step)
            if self.keep_flagged_positions:
                self.frames.append(positions.copy())
        self._writer.writerow([repr(record[c]) if isinstance(record[c], float) else int(record[c]) for c in COLUMNS])
        self._out.flush()

    def _check_particles(self, num_particles: int) -> None:
        if self._particles is None and num_particles != len(self._types):
            raise ValueError(
                f"particle-count mismatch: the System has {num_particles} particles but the reporter was given "
                f"{len(self._types)} particle_types; pass one type per particle, or particles=[...] for a subset"
            )
        if self._particles is not None and self._particles.max() >= num_particles:
            raise ValueError(
                f"particles contains index {int(self._particles.max())} but the System has only {num_particles} particles"
            )
        self._checked = True

    # ------------------------------------------------------------------ file handling
    def close(self) -> None:
        """Close the CSV file if the reporter opened it (a caller's file object is left open)."""
        if self._own_file and not self._out.closed:
            self._out.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, io.SEEK_END)
        return handle.read(1) == b"\n"
