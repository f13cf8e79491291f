"""Compact binary datasets (.npz) and suffix-dispatched reading/writing of Configurations.

Layout of a dataset file (all in OpenMM units: nm, kJ/mol, kJ/mol/nm, virial kJ/mol, charges e),
for ``n`` configurations with ``N`` particles in total:

=================  ===================  =====================================================
key                shape / dtype        meaning
=================  ===================  =====================================================
``format``         () str               :data:`FORMAT_TAG`
``version``        () int64             :data:`FORMAT_VERSION`
``type_names``     (T,) str             type name list; ``types`` index into it
``offsets``        (n+1,) int64         particles of config i are ``offsets[i]:offsets[i+1]``
``types``          (N,) int32           index into ``type_names``
``positions``      (N, 3) float64       nm
``has_box``        (n,) bool            periodic? (``box`` rows are zero where not)
``box``            (n, 3, 3) float64    rows a, b, c in nm
``has_energy``     (n,) bool            energy present?
``energy``         (n,) float64         kJ/mol (0 where absent)
``has_forces``     (n,) bool            forces present?
``forces``         (N, 3) float64       kJ/mol/nm (0 where absent)
``has_virial``     (n,) bool            virial present?
``virial``         (n, 3, 3) float64    kJ/mol, −∂E/∂ε
``has_charges``    (n,) bool            per-particle charges present?
``charges``        (N,) float64         e
``has_dipole``     (n,) bool            dipole present? (optional entry: older files lack it)
``dipole``         (n, 3) float64       e·nm (optional entry)
``total_charge``   (n,) float64         e
``multiplicity``   (n,) int64           2S+1
``info``           (L,) uint8           UTF-8 JSON list of the per-configuration info dicts
=================  ===================  =====================================================

Loading never unpickles (``allow_pickle=False``). Info values must be JSON-serialisable (numpy
scalars and arrays are stored as numbers and lists; tuples come back as lists).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from multiscale.data.configuration import Configuration
from multiscale.data.extxyz import PathLike, _atomic_write, _check_configs, read_extxyz, write_extxyz

#: value of the ``format`` entry of every dataset file.
FORMAT_TAG = "multiscale.dataset"
#: newest layout version this module writes and reads.
FORMAT_VERSION = 1

EXTXYZ_SUFFIXES = (".xyz", ".extxyz")
NPZ_SUFFIXES = (".npz",)

_REQUIRED = (
    "format", "version", "type_names", "offsets", "types", "positions", "has_box", "box",
    "has_energy", "energy", "has_forces", "forces", "has_virial", "virial", "has_charges", "charges",
    "total_charge", "multiplicity", "info",
)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _info_json(info: Dict[str, Any], k: int) -> str:
    try:
        return json.dumps(info, default=_json_default)
    except (TypeError, ValueError) as exc:
        for key, value in info.items():
            try:
                json.dumps({key: value}, default=_json_default)
            except (TypeError, ValueError):
                raise ValueError(
                    f"configuration {k}: info {key!r} = {value!r} is not JSON-serialisable; "
                    "store numbers, strings, lists or dicts in Configuration.info"
                ) from exc
        raise ValueError(f"configuration {k}: info is not JSON-serialisable ({exc})") from exc


def _check_npz_path(path: PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in NPZ_SUFFIXES:
        raise ValueError(f"dataset path {path} must end in .npz (numpy archive); rename it, "
                         "or use write_configurations for other formats")
    return path


def save_dataset(path: PathLike, configs: Sequence[Configuration], *, compress: bool = False) -> None:
    """Save Configurations (OpenMM units) to a ``.npz`` dataset file, atomically.

    ``compress=True`` uses ``numpy.savez_compressed`` (smaller, slower). Layout: module docstring.
    """
    path = _check_npz_path(path)
    configs = _check_configs(configs, "save_dataset")
    n = len(configs)
    type_names = sorted({t for c in configs for t in c.types})
    index = {t: i for i, t in enumerate(type_names)}
    sizes = np.array([c.num_particles for c in configs], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    total = int(offsets[-1])

    positions = np.zeros((total, 3))
    types = np.zeros(total, dtype=np.int32)
    forces = np.zeros((total, 3))
    charges = np.zeros(total)
    box = np.zeros((n, 3, 3))
    virial = np.zeros((n, 3, 3))
    dipole = np.zeros((n, 3))
    energy = np.zeros(n)
    has = {key: np.zeros(n, dtype=bool) for key in ("box", "energy", "forces", "virial", "charges", "dipole")}
    infos = []
    for k, c in enumerate(configs):
        s = slice(offsets[k], offsets[k + 1])
        positions[s] = c.positions
        types[s] = [index[t] for t in c.types]
        if c.box is not None:
            box[k], has["box"][k] = c.box, True
        if c.energy is not None:
            energy[k], has["energy"][k] = c.energy, True
        if c.forces is not None:
            forces[s], has["forces"][k] = c.forces, True
        if c.virial is not None:
            virial[k], has["virial"][k] = c.virial, True
        if c.charges is not None:
            charges[s], has["charges"][k] = c.charges, True
        if c.dipole is not None:
            dipole[k], has["dipole"][k] = c.dipole, True
        infos.append(_info_json(c.info, k))

    arrays = dict(
        format=np.array(FORMAT_TAG),
        version=np.array(FORMAT_VERSION, dtype=np.int64),
        type_names=np.array(type_names, dtype=str) if type_names else np.zeros(0, dtype="<U1"),
        offsets=offsets,
        types=types,
        positions=positions,
        has_box=has["box"],
        box=box,
        has_energy=has["energy"],
        energy=energy,
        has_forces=has["forces"],
        forces=forces,
        has_virial=has["virial"],
        virial=virial,
        has_charges=has["charges"],
        charges=charges,
        has_dipole=has["dipole"],
        dipole=dipole,
        total_charge=np.array([c.total_charge for c in configs], dtype=np.float64),
        multiplicity=np.array([c.multiplicity for c in configs], dtype=np.int64),
        info=np.frombuffer(("[" + ", ".join(infos) + "]").encode("utf-8"), dtype=np.uint8),
    )
    savez = np.savez_compressed if compress else np.savez
    _atomic_write(path, lambda handle: savez(handle, **arrays))


def load_dataset(path: PathLike) -> List[Configuration]:
    """Configurations (OpenMM units) from a ``.npz`` file written by :func:`save_dataset`.

    Never unpickles. Errors name the file (and the configuration index where one is at fault).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc}); "
                         "dataset files are written by save_dataset") from exc
    if "format" not in data or data["format"].shape != () or str(data["format"]) != FORMAT_TAG:
        raise ValueError(f"{path}: not a multiscale dataset (no format tag {FORMAT_TAG!r}); "
                         "dataset files are written by save_dataset")
    version = int(data["version"]) if "version" in data else -1
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: dataset format version {version} is newer than this multiscale reads "
                         f"(<= {FORMAT_VERSION}); upgrade multiscale")
    if version < 1:
        raise ValueError(f"{path}: invalid dataset format version {version}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ValueError(f"{path}: dataset file is missing entries {missing} (truncated or not written by "
                         "save_dataset)")

    offsets = data["offsets"].astype(np.int64)
    n = len(offsets) - 1
    total = len(data["types"])
    type_names = [str(t) for t in data["type_names"]]
    problems = []
    if n < 0 or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 1):
        problems.append("offsets are not increasing from 0 to the number of particles")
    if total and (data["types"].min() < 0 or data["types"].max() >= len(type_names)):
        problems.append("type indices fall outside type_names")
    per_config = ("has_box", "box", "has_energy", "energy", "has_forces", "has_virial", "virial",
                  "has_charges", "total_charge", "multiplicity") + tuple(k for k in ("has_dipole", "dipole") if k in data)
    per_particle = ("positions", "forces", "charges")
    problems += [f"{key} has {len(data[key])} rows, expected {n}" for key in per_config if len(data[key]) != n]
    problems += [f"{key} has {len(data[key])} rows, expected {total}" for key in per_particle
                 if len(data[key]) != total]
    try:
        infos = json.loads(np.asarray(data["info"], dtype=np.uint8).tobytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"info is not valid JSON ({exc})")
        infos = None
    if infos is not None and (not isinstance(infos, list) or len(infos) != n):
        problems.append(f"info is not a list of {n} dicts")
    if problems:
        raise ValueError(f"{path}: corrupt dataset file: " + "; ".join(problems))

    configs = []
    for k in range(n):
        s = slice(offsets[k], offsets[k + 1])
        try:
            configs.append(
                Configuration(
                    types=[type_names[i] for i in data["types"][s]],
                    positions=data["positions"][s],
                    box=data["box"][k] if data["has_box"][k] else None,
                    energy=float(data["energy"][k]) if data["has_energy"][k] else None,
                    forces=data["forces"][s] if data["has_forces"][k] else None,
                    virial=data["virial"][k] if data["has_virial"][k] else None,
                    charges=data["charges"][s] if data["has_charges"][k] else None,
                    dipole=data["dipole"][k] if "has_dipole" in data and data["has_dipole"][k] else None,
                    total_charge=float(data["total_charge"][k]),
                    multiplicity=int(data["multiplicity"][k]),
                    info=dict(infos[k]),
                )
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: configuration {k}: {exc}") from exc
    return configs


def _format_of(path: PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in EXTXYZ_SUFFIXES:
        return "extxyz"
    if suffix in NPZ_SUFFIXES:
        return "npz"
    accepted = ", ".join(EXTXYZ_SUFFIXES + NPZ_SUFFIXES)
    raise ValueError(f"{path}: unknown dataset file suffix {suffix or '(none)'!r}; accepted suffixes: {accepted} "
                     "(.xyz/.extxyz = extended XYZ in ASE units, .npz = multiscale binary dataset)")


def read_configurations(path: PathLike) -> List[Configuration]:
    """Read Configurations from ``.xyz``/``.extxyz`` (:func:`read_extxyz`) or ``.npz`` (:func:`load_dataset`)."""
    return read_extxyz(path) if _format_of(path) == "extxyz" else load_dataset(path)


def write_configurations(path: PathLike, configs: Sequence[Configuration]) -> None:
    """Write Configurations to ``.xyz``/``.extxyz`` (:func:`write_extxyz`) or ``.npz`` (:func:`save_dataset`), atomically."""
    if _format_of(path) == "extxyz":
        write_extxyz(path, configs)
    else:
        save_dataset(path, configs)
