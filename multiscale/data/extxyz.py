"""Extended XYZ files (ASE conventions) ⇄ :class:`Configuration` (OpenMM units).

Files are in ASE units: positions and Lattice in Å, energy in eV, forces in eV/Å, stress in eV/Å³
with ASE's sign (stress = (1/V) ∂E/∂ε, positive under tension), virial (libAtoms/QUIP key) in
eV = −V·stress. Inside multiscale everything is nm, kJ/mol, kJ/mol/nm and
the virial in kJ/mol = −∂E/∂ε = −V·stress. The conversion happens here and only here, with the
named constants of :mod:`multiscale.units`.

Reading goes through ``ase.io.read``; writing produces standard extended XYZ that ``ase.io.read``
parses, but with every float in shortest round-trip form (``repr``) instead of ASE's fixed
``%16.8f`` per-atom columns, so a write/read round trip is exact to float precision.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, IO, List, Optional, Sequence, Union

import numpy as np

from multiscale.atomic import atomic_write
from multiscale.data.configuration import Configuration
from multiscale.units import (
    ANGSTROM_TO_NM,
    EV_PER_ANGSTROM3_TO_KJ_PER_MOL_NM3,
    EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM,
    EV_TO_KJ_PER_MOL,
)

PathLike = Union[str, os.PathLike]

#: info keys the reader interprets as labels or charge/spin state (and ASE's own header keys);
#: a Configuration.info entry with one of these names cannot be written.
RESERVED_INFO_KEYS = frozenset(
    {
        "energy", "REF_energy", "free_energy",
        "forces", "REF_forces",
        "stress", "REF_stress", "virial", "REF_virial",
        "charges", "REF_charges", "initial_charges", "charge", "total_charge", "dipole", "REF_dipole",
        "multiplicity", "spin",
        "pbc", "Lattice", "Properties", "species", "pos", "Z",
    }
)

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _ase():
    try:
        import ase  # noqa: F401
        import ase.io  # noqa: F401
        from ase.calculators.singlepoint import SinglePointCalculator  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("extended XYZ I/O needs ASE: pip install ase (or use the .npz format)") from exc
    return ase


def _atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """:func:`multiscale.atomic.atomic_write`, refusing a missing directory with a clear message."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist (create it first)")
    atomic_write(path, write)


def _check_configs(configs: Sequence[Configuration], what: str) -> List[Configuration]:
    if isinstance(configs, Configuration):
        raise TypeError(f"{what} takes a list of Configurations; wrap a single one as [config]")
    configs = list(configs)
    for k, config in enumerate(configs):
        if not isinstance(config, Configuration):
            raise TypeError(f"{what}: item {k} is a {type(config).__name__}, not a multiscale Configuration")
    return configs


# ----------------------------------------------------------------------------------------- ASE Atoms


def configuration_to_atoms(config: Configuration):
    """An ``ase.Atoms`` in ASE units (Å, eV, eV/Å, eV/Å³) with the labels on a SinglePointCalculator.

    Energy → ``calc.results["energy"]`` (eV), forces → ``["forces"]`` (eV/Å), virial (kJ/mol) →
    ``["stress"]`` = −virial/V in eV/Å³ (Voigt), dipole (e·nm) → ``atoms.info["dipole"]`` (e·Å), charges (e) →
    ``atoms.arrays["charges"]``,
    total charge and multiplicity → ``atoms.info["total_charge"]``, ``["multiplicity"]``; the rest
    of ``config.info`` is copied into ``atoms.info``. Types must be chemical element symbols.
    """
    _ase()
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.data import chemical_symbols

    bad = sorted({t for t in config.types if t not in chemical_symbols})
    if bad:
        raise ValueError(
            f"types {bad} are not chemical element symbols; extended XYZ (ASE) stores elements only — "
            "save coarse-grained/bead types with the .npz format (save_dataset)"
        )
    clash = sorted(k for k in config.info if k in RESERVED_INFO_KEYS)
    if clash:
        raise ValueError(
            f"info keys {clash} are reserved in extended XYZ (they are read back as labels or charge/spin); "
            "rename them in Configuration.info"
        )
    periodic = config.box is not None
    atoms = ase.Atoms(
        symbols=list(config.types),
        positions=config.positions / ANGSTROM_TO_NM,
        cell=config.box / ANGSTROM_TO_NM if periodic else None,
        pbc=periodic,
    )
    if config.charges is not None:
        atoms.arrays["charges"] = np.array(config.charges, dtype=np.float64)
    atoms.info.update(config.info)
    atoms.info["total_charge"] = float(config.total_charge)
    atoms.info["multiplicity"] = int(config.multiplicity)
    if config.dipole is not None:
        atoms.info["dipole"] = np.asarray(config.dipole, dtype=np.float64) / ANGSTROM_TO_NM
    results: Dict[str, Any] = {}
    if config.energy is not None:
        results["energy"] = config.energy / EV_TO_KJ_PER_MOL
    if config.forces is not None:
        results["forces"] = config.forces / EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
    if config.virial is not None:
        w = config.virial
        if not np.allclose(w, w.T, rtol=0.0, atol=1e-10 * max(1.0, float(np.abs(w).max()))):
            raise ValueError(
                "virial is not symmetric; extended XYZ (ASE) stores the stress as a symmetric Voigt tensor — "
                "symmetrise it (0.5·(W + Wᵀ)) or use the .npz format, which keeps the full 3x3"
            )
        stress = -w / config.volume / EV_PER_ANGSTROM3_TO_KJ_PER_MOL_NM3  # eV/Å³, 3x3
        results["stress"] = np.array(
            [stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]]
        )
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _real(value: Any, key: str, where: str) -> float:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: info {key!r} = {value!r} is not a number; fix or remove it")
    return float(value)


def _calc_property(atoms, getter: Callable[[], Any]) -> Optional[np.ndarray]:
    from ase.calculators.calculator import PropertyNotImplementedError

    if atoms.calc is None:
        return None
    try:
        return getter()
    except PropertyNotImplementedError:
        return None


def _stress_3x3(value: Any, key: str, where: str) -> np.ndarray:
    from ase.stress import voigt_6_to_full_3x3_stress

    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (6,):
        return voigt_6_to_full_3x3_stress(arr)
    if arr.shape == (9,):
        return arr.reshape(3, 3, order="F")
    if arr.shape == (3, 3):
        return arr
    raise ValueError(f"{where}: {key!r} must have 6 (Voigt) or 9 (3x3) values, got shape {arr.shape}")


#: Two atoms closer than this (Å) in an extxyz file mean the file is not in Å: the shortest
#: chemical bond (H₂) is 0.74 Å, and a file written in nm puts an O–H bond at 0.0096 "Å".
MIN_ATOM_DISTANCE_ANGSTROM = 0.5


def _check_length_unit(positions_angstrom: np.ndarray, box_nm: Optional[np.ndarray], where: str) -> None:
    """Refuse a frame whose closest atoms (periodic images included) are nearer than
    MIN_ATOM_DISTANCE_ANGSTROM: it was almost surely written in nm instead of Å."""
    if len(positions_angstrom) < 2 or not np.all(np.isfinite(positions_angstrom)):
        return
    import torch

    from multiscale.neighbors import NeighborList

    cutoff_nm = MIN_ATOM_DISTANCE_ANGSTROM * ANGSTROM_TO_NM
    pos = torch.tensor(positions_angstrom * ANGSTROM_TO_NM, dtype=torch.float64)
    box = None if box_nm is None else torch.tensor(box_nm, dtype=torch.float64)
    if box is not None and not float(torch.det(box)) > 0:
        return  # refused with its own message when the Configuration is built
    senders, receivers, vectors = NeighborList(cutoff_nm)(pos, box)
    if vectors.shape[0] == 0:
        return
    lengths = torch.linalg.norm(vectors, dim=1)
    k = int(torch.argmin(lengths))
    distance = float(lengths[k]) / ANGSTROM_TO_NM
    i, j = sorted((int(receivers[k]), int(senders[k])))
    raise ValueError(
        f"{where}: atoms {i} and {j} are {distance:.4g} Å apart, closer than any chemical bond "
        f"({MIN_ATOM_DISTANCE_ANGSTROM} Å); extxyz positions must be in Å (ASE units). If the file is in nm, "
        "multiply positions (and the Lattice) by 10; otherwise remove the duplicated atoms"
    )


def atoms_to_configuration(atoms, *, where: str = "ASE Atoms") -> Configuration:
    """A :class:`Configuration` (nm, kJ/mol, kJ/mol/nm, virial kJ/mol) from an ``ase.Atoms`` in ASE units.

    Labels, first match wins:
      energy (eV): the calculator's energy (``atoms.get_potential_energy()``), else info "energy",
        "REF_energy";
      forces (eV/Å): the calculator's forces (constraints not applied), else arrays "forces",
        "REF_forces";
      stress (eV/Å³, ASE sign, Voigt or 3x3): the calculator's stress, else info "stress",
        "REF_stress"; else the libAtoms virial (eV, = −V·stress) from info "virial", "REF_virial".
        Stored as virial = −stress·V (kJ/mol);
      charges (e): the calculator's "charges" (what ASE makes of a ``charges``/``charge`` column),
        else arrays "charges", "REF_charges", "initial_charges";
      dipole (e·Å): the calculator's "dipole", else info "dipole", "REF_dipole" (open boundaries);
      total charge (e): info "total_charge", else "charge", else 0;
      multiplicity 2S+1: info "multiplicity", else "spin" (read as the multiplicity, the
        fairchem/OMol convention), else 1.
    ``pbc`` must be all True (box = cell in nm) or all False (open; the cell is ignored).
    ``where`` prefixes every error message (e.g. "water.xyz frame 3").
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all():
        box = np.asarray(atoms.cell[:], dtype=np.float64) * ANGSTROM_TO_NM
    elif not pbc.any():
        box = None
    else:
        raise ValueError(
            f"{where}: partial periodicity pbc={pbc.tolist()} is not supported; multiscale needs fully periodic "
            '(pbc="T T T" with a Lattice) or open (pbc="F F F") structures — fix pbc/Lattice in the input'
        )
    info = dict(atoms.info)
    used: List[str] = []

    def take(keys: Sequence[str]):
        for key in keys:
            if key in info:
                used.append(key)
                return key, info[key]
        return None, None

    energy = _calc_property(atoms, atoms.get_potential_energy)
    if energy is None:
        key, value = take(("energy", "REF_energy"))
        energy = None if key is None else _real(value, key, where)
    forces = _calc_property(atoms, lambda: atoms.get_forces(apply_constraint=False))
    if forces is None:
        for key in ("forces", "REF_forces"):
            if key in atoms.arrays:
                forces = atoms.arrays[key]
                break
    stress = None
    if box is not None:  # a live calculator cannot give a stress without a cell
        stress = _calc_property(atoms, lambda: atoms.get_stress(voigt=False, apply_constraint=False))
    elif atoms.calc is not None and atoms.calc.results.get("stress") is not None:
        stress = atoms.calc.results["stress"]  # rejected below: no periodic cell
    virial_ev = None
    if stress is None:
        key, value = take(("stress", "REF_stress"))
        if key is not None:
            stress = _stress_3x3(value, key, where)
        else:
            key, value = take(("virial", "REF_virial"))
            if key is not None:
                virial_ev = _stress_3x3(value, key, where)
    virial = None
    if stress is not None or virial_ev is not None:
        if box is None:
            raise ValueError(f"{where}: has a stress/virial but no periodic cell; add a Lattice with pbc=\"T T T\" "
                             "or drop the stress")
        if virial_ev is not None:
            virial = np.asarray(virial_ev, dtype=np.float64) * EV_TO_KJ_PER_MOL
        else:
            volume_nm3 = float(np.linalg.det(box))
            virial = -np.asarray(stress, dtype=np.float64) * EV_PER_ANGSTROM3_TO_KJ_PER_MOL_NM3 * volume_nm3

    charges = None
    if atoms.calc is not None and atoms.calc.results.get("charges") is not None:
        charges = atoms.calc.results["charges"]
    else:
        for key in ("charges", "REF_charges", "initial_charges"):
            if key in atoms.arrays:
                charges = atoms.arrays[key]
                break

    dipole = None
    if atoms.calc is not None and atoms.calc.results.get("dipole") is not None:
        dipole = atoms.calc.results["dipole"]
    else:
        key, value = take(("dipole", "REF_dipole"))
        dipole = value
    if dipole is not None:
        dipole = np.asarray(dipole, dtype=np.float64).reshape(-1) * ANGSTROM_TO_NM

    key, value = take(("total_charge",))
    total_charge = 0.0 if key is None else _real(value, key, where)
    if "charge" in info:
        other = _real(info["charge"], "charge", where)
        used.append("charge")
        if key is not None and other != total_charge:
            raise ValueError(f"{where}: info 'total_charge' = {total_charge} and 'charge' = {other} disagree; "
                             "keep one of them")
        total_charge = other
    key, value = take(("multiplicity", "spin"))
    multiplicity = 1
    if key is not None:
        m = _real(value, key, where)
        if m != int(m) or m < 1:
            raise ValueError(
                f"{where}: info {key!r} = {value!r} is not a spin multiplicity 2S+1 (an integer >= 1); "
                "if the file stores S or 2S, convert it to 2S+1"
            )
        multiplicity = int(m)
    for key in used:
        info.pop(key, None)
    info = {key: value.item() if isinstance(value, np.generic) else value for key, value in info.items()}
    _check_length_unit(np.asarray(atoms.positions, dtype=np.float64), box, where)
    try:
        return Configuration(
            types=atoms.get_chemical_symbols(),
            positions=np.asarray(atoms.positions, dtype=np.float64) * ANGSTROM_TO_NM,
            box=box,
            energy=None if energy is None else float(energy) * EV_TO_KJ_PER_MOL,
            forces=None if forces is None else np.asarray(forces, dtype=np.float64) * EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM,
            virial=virial,
            charges=charges,
            dipole=dipole,
            total_charge=total_charge,
            multiplicity=multiplicity,
            info=info,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


# ----------------------------------------------------------------------------------------- files


def read_extxyz(path: PathLike) -> List[Configuration]:
    """All frames of an extended XYZ file (ASE units) as Configurations in OpenMM units.

    Uses ``ase.io.read(path, index=":", format="extxyz")``; see :func:`atoms_to_configuration` for
    which keys are read as labels. Errors name the file and the (0-based) frame index.
    """
    _ase()
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"extended XYZ file {path} does not exist")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:
        raise ValueError(f"{path}: could not parse as extended XYZ ({type(exc).__name__}: {exc})") from exc
    return [atoms_to_configuration(atoms, where=f"{path} frame {k}") for k, atoms in enumerate(frames)]


def _float(x: float) -> str:
    return repr(float(x))


def _format_frame(atoms) -> str:
    """One extended XYZ frame for an Atoms built by :func:`configuration_to_atoms`, floats in repr form."""
    from ase.io.extxyz import key_val_dict_to_str

    results = atoms.calc.results if atoms.calc is not None else {}
    symbols = atoms.get_chemical_symbols()
    columns = [symbols, [" ".join(_float(x) for x in row) for row in atoms.positions]]
    properties = "species:S:1:pos:R:3"
    if results.get("forces") is not None:
        columns.append([" ".join(_float(x) for x in row) for row in results["forces"]])
        properties += ":forces:R:3"
    if "charges" in atoms.arrays:
        columns.append([_float(q) for q in atoms.arrays["charges"]])
        properties += ":charges:R:1"

    header: Dict[str, Any] = {}
    if results.get("energy") is not None:
        header["energy"] = float(results["energy"])
    if results.get("stress") is not None:
        from ase.stress import voigt_6_to_full_3x3_stress

        header["stress"] = voigt_6_to_full_3x3_stress(np.asarray(results["stress"], dtype=np.float64))
    for key, value in atoms.info.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"info key {key!r} is not a valid extended XYZ key (letters, digits, _ and -, "
                             "not starting with a digit); rename it")
        if isinstance(value, str):
            if "\n" in value or "\r" in value:
                raise ValueError(f"info {key!r} contains a line break, which extended XYZ cannot store")
        elif not isinstance(value, (numbers.Number, np.ndarray, np.generic)):
            try:
                json.dumps(value)
            except TypeError as exc:
                raise ValueError(f"info {key!r} = {value!r} cannot be stored in extended XYZ (not a number, "
                                 "string, array or JSON-serialisable value)") from exc
        header[key] = value
    header["pbc"] = np.asarray(atoms.pbc, dtype=bool)
    comment = f"Properties={properties} " + key_val_dict_to_str(header)
    if atoms.pbc.all():
        lattice = " ".join(_float(x) for x in np.asarray(atoms.cell[:]).reshape(9))  # rows a, b, c
        comment = f'Lattice="{lattice}" ' + comment
    lines = [str(len(atoms)), comment]
    lines.extend(" ".join(fields) for fields in zip(*columns))
    return "\n".join(lines) + "\n"


def write_extxyz(path: PathLike, configs: Sequence[Configuration]) -> None:
    """Write Configurations (OpenMM units) to an extended XYZ file in ASE units, atomically.

    Each frame is :func:`configuration_to_atoms` (energy eV, forces eV/Å, stress = −virial/V in
    eV/Å³ when a virial is present, charges in the ``charges`` column, total_charge/multiplicity in
    the header) written with full float precision, readable by ``ase.io.read``. Types must be
    element symbols; info keys must not be in :data:`RESERVED_INFO_KEYS`. An empty list writes an
    empty file (which reads back as no frames).
    """
    configs = _check_configs(configs, "write_extxyz")
    frames = []
    for k, config in enumerate(configs):
        try:
            frames.append(_format_frame(configuration_to_atoms(config)))
        except ValueError as exc:
            raise ValueError(f"{path}: configuration {k}: {exc}") from exc
    text = "".join(frames).encode("utf-8")
    _atomic_write(path, lambda handle: handle.write(text))
