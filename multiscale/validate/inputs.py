"""What the ``validate`` command reads: a model (checkpoint or ensemble folder), a structure (PDB,
or extxyz in ASE units) and optionally a serialised OpenMM System; and the System they make.

Structures: PDB, extxyz (ASE units) or a multiscale dataset (.npz).

* ``--model`` alone: a System of the model on every particle, masses from the elements.
* ``--system`` alone: that System as it is (any force field, a CG System, a classical baseline).
* both: the System (priors, force field) plus the model's force on every particle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np


@dataclass
class Structure:
    """Positions (N, 3) nm, box (3, 3) nm or None, candidate type names, masses (amu, None if unknown)."""

    positions: np.ndarray
    box: Optional[np.ndarray]
    elements: List[Optional[str]]
    names: List[str]
    masses: List[Optional[float]]
    source: str


def read_structure(path) -> Structure:
    """A PDB file (nm via OpenMM's reader; CRYST1 → box), an extxyz file (first frame, ASE units
    converted to nm at the reader) or a multiscale dataset ``.npz`` (first frame, nm)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no structure file at {path}")
    suffix = path.suffix.lower()
    if suffix in (".pdb", ".pdbx"):
        from multiscale.openmm.evaluation import read_pdb

        try:
            positions, box, elements, names, masses = read_pdb(path)
        except Exception as err:  # noqa: BLE001  (OpenMM's reader raises many kinds)
            raise ValueError(f"{path} could not be read as a PDB file ({err})") from None
        return Structure(positions, box, elements, names, masses, f"{path} (PDB)")
    if suffix in (".xyz", ".extxyz", ".npz"):
        from multiscale.data.store import read_configurations
        from multiscale.openmm.evaluation import element_masses

        configs = read_configurations(path)
        if not configs:
            raise ValueError(f"{path} holds no frames")
        config = configs[0]
        types = [str(t) for t in config.types]
        try:
            masses: List[Optional[float]] = list(element_masses(types))
        except ValueError:
            masses = [None] * len(types)
        return Structure(np.asarray(config.positions, dtype=np.float64), None if config.box is None else np.asarray(config.box),
                         types, types, masses, f"{path} (first of {len(configs)} frames" + (", Å → nm)" if suffix != ".npz" else ")"))
    raise ValueError(f"{path}: unknown structure format {suffix!r}; give a .pdb file, an .xyz/.extxyz file in ASE units (Å), "
                     "or a multiscale dataset (.npz, nm)")


def load_any_model(path):
    """A model checkpoint (``model.ckpt`` or a folder holding one), or an ensemble folder
    (``member_K/model.ckpt``, as ``train_potential.py --ensemble K`` writes)."""
    from multiscale.models.ensemble import load_ensemble
    from multiscale.models.io import load_model

    path = Path(path)
    if path.is_dir() and not (path / "model.ckpt").is_file():
        if any(path.glob("member_*")) or (path / "ensemble").is_dir():
            return load_ensemble(path / "ensemble" if (path / "ensemble").is_dir() else path)
    return load_model(path)


def model_types(model, structure: Structure) -> List[str]:
    """One model type per particle: the element symbols if the model knows them all, else the atom
    names (coarse-grained beads), else a ValueError naming the unknown ones."""
    known = set(model.type_names)
    for candidate in (structure.elements, structure.names):
        if all(t is not None and t in known for t in candidate):
            return [str(t) for t in candidate]
    unknown = sorted({str(e if e is not None else n) for e, n in zip(structure.elements, structure.names)
                      if (e not in known) and (n not in known)})
    raise ValueError(f"the model knows the types {sorted(known)}, but the structure has {unknown[:10]} (elements or atom "
                     "names); give the structure the model was trained for")


def build_system(structure: Structure, model=None, system=None, backend: str = "torchforce"):
    """(System, types) for the command (see the module docstring)."""
    from multiscale.openmm.assembly import EnsembleTerm, MLTerm, assemble_system

    n = structure.positions.shape[0]
    types = None
    if system is not None and system.getNumParticles() != n:
        raise ValueError(f"the System has {system.getNumParticles()} particles but the structure has {n}; "
                         "give the structure the System was built for")
    if model is None:
        return system, None
    types = model_types(model, structure)
    if system is not None:
        periodic = system.usesPeriodicBoundaryConditions()
    else:
        periodic = structure.box is not None
    ensemble = type(model).__name__ == "EnsemblePotential"
    term = (EnsembleTerm(model, types, periodic, backend=backend) if ensemble else
            MLTerm(model, types, periodic, backend=backend))
    if system is not None:
        return assemble_system(base=system, terms=[term]), types
    missing = [k for k, m in enumerate(structure.masses) if m is None]
    if missing:
        raise ValueError(f"particle {missing[0]} ({structure.names[missing[0]]}) has no element, so its mass is unknown; "
                         "give the System that holds the masses: --system SYSTEM.xml (the CG job writes DIR/cg_system.xml)")
    return assemble_system(structure.masses, box_nm=structure.box, terms=[term]), types
