"""GFN2-xTB reference labels from tblite, in OpenMM units.

tblite works in atomic units; the conversion happens here and nowhere else:

* positions and lattice rows: nm → Bohr (÷ ``BOHR_TO_NM``);
* energy: Hartree → kJ/mol (× ``HARTREE_TO_KJ_PER_MOL``);
* forces: −gradient, Hartree/Bohr → kJ/mol/nm (× ``HARTREE_TO_KJ_PER_MOL / BOHR_TO_NM``);
* virial: tblite's ``"virial"`` result is the strain derivative **+∂E/∂ε** in Hartree (checked
  against central finite differences of the energy under the symmetric strain
  r → r(I + ε), cell rows → rows (I + ε) on a periodic water box, see tests/test_labels.py;
  for an isolated molecule it equals Σ_i r_i ⊗ ∂E/∂r_i). multiscale's virial is −∂E/∂ε, so
  virial = −tblite_virial × ``HARTREE_TO_KJ_PER_MOL``;
* electronic temperature: K → Hartree (× ``KB_KJ_PER_MOL_K / HARTREE_TO_KJ_PER_MOL``);
* partial charges: e (no conversion);
* dipole moment (open boundaries): e·Bohr → e·nm (× ``BOHR_TO_NM``). GFN2's dipole includes the
  atomic dipoles of its multipole electrostatics, so it differs from Σ qᵢ rᵢ of its charges.

Threads: tblite parallelises with OpenMP. In a process that has imported multiscale (and so
torch), tblite shares torch's OpenMP runtime (both link ``libgomp.so.1``), so with
``processes=1`` the thread count is whatever ``torch.set_num_threads`` / ``OMP_NUM_THREADS``
say. Worker processes (``processes > 1``) run one OpenMP thread each.

Worker processes are started with the ``spawn`` method (safe next to torch's and OpenMP's
threads); a script that uses ``processes > 1`` must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from multiscale.data.configuration import Configuration
from multiscale.labels.result import LabelResult
from multiscale.units import BOHR_TO_NM, HARTREE_TO_KJ_PER_MOL, KB_KJ_PER_MOL_K

#: tblite's built-in parametrisations (all cover Z = 1–86).
TBLITE_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")
#: Heaviest element the GFN parametrisations cover (radon).
MAX_ATOMIC_NUMBER = 86
#: Boltzmann constant in Hartree/K, derived from the named CODATA 2018 constants in units.py.
KB_HARTREE_PER_K = KB_KJ_PER_MOL_K / HARTREE_TO_KJ_PER_MOL
#: Hartree/Bohr → kJ/mol/nm.
HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM = HARTREE_TO_KJ_PER_MOL / BOHR_TO_NM


@dataclass(frozen=True)
class _XTBSettings:
    method: str
    accuracy: float
    max_iterations: int
    temperature_hartree: float
    verbosity: int


@dataclass(frozen=True)
class _XTBTask:
    """One single point, in OpenMM units (converted to atomic units inside the worker)."""

    index: int
    numbers: np.ndarray
    positions: np.ndarray
    box: Optional[np.ndarray]
    charge: float
    uhf: int
    settings: _XTBSettings


class GFN2xTBLabeller:
    """Energies, forces, partial charges, and dipoles (open boundaries) or virials (periodic cells) from tblite.

    Parameters
    ----------
    method: tblite parametrisation, one of ``TBLITE_METHODS`` (default GFN2-xTB).
    processes: worker processes; 1 runs inline in this process.
    accuracy: tblite's SCC accuracy factor (smaller is tighter; 1.0 is tblite's default).
    max_iterations: maximum SCC iterations; a configuration that does not converge is a failure.
    electronic_temperature: Fermi smearing temperature in K (300 K is tblite's default).
    verbosity: tblite's printout level; 0 is silent.

    Each configuration's ``total_charge`` is the molecular charge and ``multiplicity`` − 1 the
    number of unpaired electrons. Types must be element symbols as written ("Cl", not "CL").
    """

    def __init__(
        self,
        method: str = "GFN2-xTB",
        processes: int = 1,
        accuracy: float = 1.0,
        max_iterations: int = 250,
        electronic_temperature: float = 300.0,
        verbosity: int = 0,
    ) -> None:
        if method not in TBLITE_METHODS:
            raise ValueError(f"unknown tblite method {method!r}; choose one of {list(TBLITE_METHODS)}")
        if int(processes) != processes or processes < 1:
            raise ValueError(f"processes must be a whole number >= 1 (1 runs inline), got {processes!r}")
        if not np.isfinite(accuracy) or accuracy <= 0:
            raise ValueError(f"accuracy must be a positive number (tblite's default is 1.0), got {accuracy!r}")
        if int(max_iterations) != max_iterations or max_iterations < 1:
            raise ValueError(f"max_iterations must be a whole number >= 1, got {max_iterations!r}")
        if not np.isfinite(electronic_temperature) or electronic_temperature < 0:
            raise ValueError(
                f"electronic_temperature must be >= 0 K (tblite's default is 300 K), got {electronic_temperature!r}"
            )
        if int(verbosity) != verbosity or verbosity < 0:
            raise ValueError(f"verbosity must be a whole number >= 0 (0 is silent), got {verbosity!r}")
        self.method = method
        self.processes = int(processes)
        self.accuracy = float(accuracy)
        self.max_iterations = int(max_iterations)
        self.electronic_temperature = float(electronic_temperature)
        self.verbosity = int(verbosity)

    @property
    def name(self) -> str:
        """Recorded as ``info["labeller"]`` on every labelled configuration."""
        return f"{self.method}/tblite"

    def label(self, configs: Sequence[Configuration]) -> LabelResult:
        """Label ``configs``; failures are reported by index in ``LabelResult.failures``.

        Raises ValueError up front (before any calculation) for input no calculation could
        succeed on: a type that is not an element symbol, or an element tblite does not cover.
        """
        configs = list(configs)
        settings = _XTBSettings(
            method=self.method,
            accuracy=self.accuracy,
            max_iterations=self.max_iterations,
            temperature_hartree=self.electronic_temperature * KB_HARTREE_PER_K,
            verbosity=self.verbosity,
        )
        tasks = [_task(index, config, settings) for index, config in enumerate(configs)]
        workers = min(self.processes, len(tasks))
        if workers <= 1:
            outcomes = [_run_task(task) for task in tasks]
        else:
            outcomes = _run_in_workers(tasks, workers)

        result = LabelResult()
        for index, labels, message in outcomes:
            if labels is None:
                result.failures.append((index, message))
                continue
            config = configs[index]
            info = dict(config.info)
            info.update(label_index=index, labeller=self.name)
            result.configurations.append(config.with_labels(info=info, **labels))
            result.indices.append(index)
        return result


def atomic_numbers(types: Sequence[str], config_index: int) -> np.ndarray:
    """Atomic numbers for element symbols; ValueError naming the symbol and configuration otherwise.
    (The periodic table is ASE's, the extxyz edge's: this layer builds no OpenMM objects.)"""
    from ase.data import atomic_numbers as numbers_by_symbol, chemical_symbols

    by_lower = {symbol.lower(): symbol for symbol in chemical_symbols[1:]}
    numbers = []
    for symbol in types:
        number = numbers_by_symbol.get(symbol) if symbol != "X" else None
        if number is None:
            guess = by_lower.get(str(symbol).lower())
            hint = f" (did you mean {guess!r}?)" if guess is not None else ""
            raise ValueError(
                f"configuration {config_index} has type {symbol!r}, which is not an element symbol{hint}; "
                "xTB labelling needs element symbols such as 'O', 'H', 'Cl' as Configuration.types"
            )
        if number > MAX_ATOMIC_NUMBER:
            raise ValueError(
                f"configuration {config_index} contains {symbol} (Z = {number}); the GFN "
                f"parametrisations cover only Z = 1–{MAX_ATOMIC_NUMBER}"
            )
        numbers.append(number)
    return np.array(numbers, dtype=np.int32)


def _task(index: int, config: Configuration, settings: _XTBSettings) -> _XTBTask:
    if not isinstance(config, Configuration):
        raise TypeError(f"configuration {index} is a {type(config).__name__}, expected a multiscale Configuration")
    return _XTBTask(
        index=index,
        numbers=atomic_numbers(config.types, index),
        positions=config.positions,
        box=config.box,
        charge=config.total_charge,
        uhf=config.multiplicity - 1,
        settings=settings,
    )


def _run_in_workers(tasks: List[_XTBTask], workers: int) -> list:
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread_per_worker) as pool:
            chunk = max(1, len(tasks) // (4 * workers))
            return list(pool.map(_run_task, tasks, chunksize=chunk))
    except BrokenProcessPool as error:
        raise RuntimeError(
            "a tblite worker process died before returning its results. In a script, put the code that "
            "calls GFN2xTBLabeller.label under `if __name__ == \"__main__\":` (workers are spawned and "
            "re-import the main module); otherwise label with processes=1 to see which configuration "
            f"crashes tblite ({error})"
        ) from error


def _one_thread_per_worker() -> None:
    """Worker initializer: one OpenMP thread per process, so ``processes`` workers fill ``processes`` cores.

    The environment variable covers an OpenMP runtime loaded later (tblite is imported lazily);
    torch.set_num_threads covers the runtime torch already loaded, which tblite then shares.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _run_task(task: _XTBTask) -> Tuple[int, Optional[Dict[str, np.ndarray]], Optional[str]]:
    """(index, labels, None) on success, (index, None, message) when tblite cannot label it."""
    try:
        return task.index, _singlepoint(task), None
    except (RuntimeError, ValueError) as error:  # tblite's TBLiteRuntimeError / TBLiteValueError, non-finite results
        return task.index, None, f"{type(error).__name__}: {error}"


def _singlepoint(task: _XTBTask) -> Dict[str, np.ndarray]:
    """One tblite single point; inputs and outputs in OpenMM units, tblite in atomic units."""
    from tblite.interface import Calculator

    settings = task.settings
    periodic = task.box is not None
    calc = Calculator(
        settings.method,
        task.numbers,
        task.positions / BOHR_TO_NM,
        charge=task.charge,
        uhf=task.uhf,
        lattice=task.box / BOHR_TO_NM if periodic else None,
        periodic=np.array([True, True, True]) if periodic else None,
        color=False,
    )
    calc.set("verbosity", settings.verbosity)
    calc.set("accuracy", settings.accuracy)
    calc.set("max-iter", settings.max_iterations)
    calc.set("temperature", settings.temperature_hartree)
    result = calc.singlepoint()

    energy = float(result.get("energy"))
    gradient = np.asarray(result.get("gradient"), dtype=np.float64)
    charges = np.asarray(result.get("charges"), dtype=np.float64)
    raw: Dict[str, np.ndarray] = {"energy": np.asarray(energy), "gradient": gradient, "charges": charges}
    if periodic:
        raw["virial"] = np.asarray(result.get("virial"), dtype=np.float64)
    else:
        raw["dipole"] = np.asarray(result.get("dipole"), dtype=np.float64).reshape(3)
    bad = [name for name, value in raw.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ValueError(f"tblite returned non-finite {', '.join(bad)}")

    labels: Dict[str, np.ndarray] = {
        "energy": energy * HARTREE_TO_KJ_PER_MOL,
        "forces": -gradient * HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
        "charges": charges,
    }
    if not periodic:
        labels["dipole"] = raw["dipole"] * BOHR_TO_NM
    if periodic:
        # tblite's virial is +∂E/∂ε (Hartree); ours is −∂E/∂ε (kJ/mol).
        labels["virial"] = -raw["virial"] * HARTREE_TO_KJ_PER_MOL
    return labels


__all__: List[str] = ["GFN2xTBLabeller", "TBLITE_METHODS", "atomic_numbers"]
