"""Crash-safe recording of positions and forces during an OpenMM Simulation (force-matching data).

:class:`ForceRecorder` is an OpenMM reporter that stores, every ``reportInterval`` steps, the step,
the time (ps), the positions (nm), the forces (kJ/mol/nm) and the periodic box vectors (nm, rows a,
b, c) of all particles or a subset, in chunk files of a directory::

    directory/
        manifest.json       what is recorded (count, particles, dtype, units), rewritten atomically
        chunk_00000.npz     frames 0 .. chunk_size-1
        chunk_00001.npz     ...

Each chunk holds the arrays ``steps`` (int64, (n,)), ``time_ps`` (float64, (n,)),
``positions`` ((n, P, 3)), ``forces`` ((n, P, 3)) and ``boxes`` ((n, 3, 3)), the last three in the
recorder's dtype (float32 by default, or float64).

Crash safety: frames are buffered in memory; every file (chunk or manifest) is written to a
temporary file in the same directory, fsync'ed and then renamed over its final name with
``os.replace`` (atomic on POSIX and Windows), so a file on disk is always complete. A process killed
at any moment (``kill -9``) loses at most the buffered frames not yet written, never a chunk on
disk. :meth:`ForceRecorder.flush` writes the buffered frames as the current (partial) chunk; later
frames go into the same chunk, which is rewritten until it holds ``chunk_size`` frames.
:meth:`ForceRecorder.close` flushes. OpenMM's Simulation never closes its reporters: call
``close()`` (or use the recorder as a context manager) after the last step. Leftover temporary
files of an interrupted write (``.chunk_*.tmp``) are ignored by :func:`load_recording`. A chunk is
written before the manifest, so after a crash the manifest's ``count`` can lag the chunks by one
write; :func:`load_recording` and ``append=True`` count the frames in the chunk files themselves.

Forces are ``State.getForces()``: the forces of the integration force groups, **without constraint
forces** (OpenMM does not report them). With constraints in the System, the recorded force on a
constrained atom is not the total force it feels, and a force map summing atomic forces across a
constraint is wrong; record from a System without constraints (e.g. ``systems.polyethylene``'s
stiff harmonic bonds) or use a constraint-aware force map.

Positions are requested unwrapped (``'periodic': False``): molecules stay whole as integrated.
For a non-periodic System the recorded box is the System's default box and carries no meaning.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from openmm import unit

from multiscale.atomic import atomic_write

#: Name of the manifest file in a recording directory.
MANIFEST = "manifest.json"
#: Format tag and version written into the manifest.
FORMAT = "multiscale.ForceRecorder"
VERSION = 1
#: Chunk file names: ``chunk_00000.npz`` (more digits past 99999 chunks).
CHUNK_PATTERN = re.compile(r"^chunk_(\d+)\.npz$")
#: Units of the recorded arrays.
UNITS = {"time_ps": "ps", "positions": "nm", "forces": "kJ/mol/nm", "boxes": "nm"}
#: Permissions of the written files (readable by group and others, like a plain open()).
FILE_MODE = 0o644
#: The dtypes the recorder can store positions, forces and boxes in.
DTYPES = ("float32", "float64")

_FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer


def _chunk_name(index: int) -> str:
    return f"chunk_{index:05d}.npz"


def _chunk_files(directory: Path) -> List[Path]:
    """The complete chunk files of ``directory``, in chunk order (temporary files ignored)."""
    found = []
    for path in directory.iterdir():
        match = CHUNK_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def _read_manifest(directory: Path) -> Optional[Dict[str, Any]]:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    return manifest


class ForceRecorder:
    """OpenMM reporter writing step, time, positions, forces and box to crash-safe chunk files.

    Parameters
    ----------
    directory: the recording directory (created if missing).
    reportInterval: record every this many steps (at steps that are multiples of it).
    chunk_size: frames per chunk file (each full chunk is written as soon as it fills).
    append: continue an existing recording (e.g. after resuming from a checkpoint): new chunks
        are numbered after the existing ones, and the directory's manifest must match this
        recorder's ``particles`` and ``dtype`` (and, at the first report, the particle count).
        A directory without a recording is started afresh. With ``append=False`` a directory that
        already holds a recording is refused (nothing is overwritten).
    particles: System indices (0-based, distinct) of the particles to record, in that order;
        None records all particles.
    dtype: 'float32' (default) or 'float64' for positions, forces and boxes; steps are int64 and
        times float64 always.

    Units: time ps, positions nm, forces kJ/mol/nm, box vectors nm (rows a, b, c).
    """

    def __init__(
        self,
        directory: Union[str, "os.PathLike[str]"],
        reportInterval: int,
        *,
        chunk_size: int = 100,
        append: bool = False,
        particles: Optional[Sequence[int]] = None,
        dtype: str = "float32",
    ):
        interval = int(reportInterval)
        if isinstance(reportInterval, bool) or interval != reportInterval or interval < 1:
            raise ValueError(f"reportInterval must be a positive whole number of steps, got {reportInterval!r}")
        size = int(chunk_size)
        if isinstance(chunk_size, bool) or size != chunk_size or size < 1:
            raise ValueError(f"chunk_size must be a positive whole number of frames, got {chunk_size!r}")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if particles is not None:
            if isinstance(particles, (str, bytes)):
                raise TypeError("particles must be a sequence of System indices, not a string")
            selection = [int(p) for p in particles]
            if not selection:
                raise ValueError("particles is empty; pass None to record every particle, or at least one index")
            if len(set(selection)) != len(selection) or min(selection) < 0:
                raise ValueError("particles must be distinct, non-negative 0-based System indices")
            self._particles: Optional[np.ndarray] = np.asarray(selection, dtype=np.int64)
        else:
            self._particles = None
        self.directory = Path(directory)
        self.reportInterval = interval
        self.chunk_size = size
        self.dtype = str(dtype)
        self._num_particles: Optional[int] = None if self._particles is None else len(self._particles)
        self._periodic: Optional[bool] = None
        self._closed = False

        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = _read_manifest(self.directory)
        chunks = _chunk_files(self.directory)
        if (manifest is not None or chunks) and not append:
            raise FileExistsError(
                f"{self.directory} already holds a recording ({len(chunks)} chunk files); pass append=True to "
                "continue it, or choose a new directory (or delete the old one) to start afresh"
            )
        self._written = 0  # frames in complete files on disk, excluding the current chunk
        self._chunk_index = 0
        if chunks:
            if manifest is None:
                raise ValueError(
                    f"{self.directory} has chunk files but no {MANIFEST}; it was not written by ForceRecorder "
                    "(or the manifest was deleted); choose another directory"
                )
            self._check_manifest(manifest)
            self._written = sum(_chunk_length(path) for path in chunks)
            self._chunk_index = int(CHUNK_PATTERN.match(chunks[-1].name).group(1)) + 1
            self._num_particles = manifest.get("num_particles")
            self._periodic = manifest.get("periodic")
        elif manifest is not None:
            self._check_manifest(manifest)
            self._num_particles = manifest.get("num_particles") or self._num_particles
        self._buffer: Dict[str, List[np.ndarray]] = {key: [] for key in ("steps", "time_ps", "positions", "forces", "boxes")}
        self._buffer_on_disk = 0  # frames of the current chunk already in its file (after a flush)
        self._write_manifest()

    def _check_manifest(self, manifest: Dict[str, Any]) -> None:
        recorded = manifest.get("particles")
        wanted = None if self._particles is None else self._particles.tolist()
        if recorded != wanted:
            raise ValueError(
                f"cannot append to {self.directory}: it records particles={_describe(recorded)} but this recorder "
                f"was given particles={_describe(wanted)}; pass the same selection, or record into a new directory"
            )
        if manifest.get("dtype") != self.dtype:
            raise ValueError(
                f"cannot append to {self.directory}: it is recorded as {manifest.get('dtype')} but this recorder "
                f"uses dtype={self.dtype!r}; pass dtype={manifest.get('dtype')!r}"
            )

    # ------------------------------------------------------------------ OpenMM reporter protocol
    def describeNextReport(self, simulation) -> Dict[str, Any]:
        """Steps until the next report and what the State must hold (unwrapped positions, forces)."""
        steps = self.reportInterval - simulation.currentStep % self.reportInterval
        return {"steps": steps, "periodic": False, "include": ["positions", "forces"]}

    def report(self, simulation, state) -> None:
        """Buffer one frame from ``state``; write the chunk when it holds ``chunk_size`` frames."""
        if self._closed:
            raise RuntimeError(f"this ForceRecorder ({self.directory}) is closed; create a new one with append=True")
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        forces = state.getForces(asNumpy=True).value_in_unit(_FORCE_UNIT)
        total = len(positions)
        if self._particles is not None:
            if self._particles.max() >= total:
                raise ValueError(
                    f"particles contains index {int(self._particles.max())} but the System has only {total} particles"
                )
            positions, forces = positions[self._particles], forces[self._particles]
        elif self._num_particles is not None and self._num_particles != total:
            raise ValueError(
                f"particle-count mismatch: {self.directory} records {self._num_particles} particles but this "
                f"System has {total}; record into a new directory"
            )
        first = self._num_particles is None or self._periodic is None
        self._num_particles = len(positions)
        self._periodic = bool(simulation.system.usesPeriodicBoundaryConditions())
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        self._buffer["steps"].append(np.int64(simulation.currentStep))
        self._buffer["time_ps"].append(np.float64(state.getTime().value_in_unit(unit.picosecond)))
        self._buffer["positions"].append(np.asarray(positions, dtype=self.dtype))
        self._buffer["forces"].append(np.asarray(forces, dtype=self.dtype))
        self._buffer["boxes"].append(np.asarray(box, dtype=self.dtype))
        if first:
            self._write_manifest()
        if len(self._buffer["steps"]) >= self.chunk_size:
            self._write_chunk()
            self._chunk_index += 1
            self._written += len(self._buffer["steps"])
            for values in self._buffer.values():
                values.clear()
            self._buffer_on_disk = 0
            self._write_manifest()

    # ------------------------------------------------------------------ files
    @property
    def count(self) -> int:
        """Frames recorded so far (on disk and buffered)."""
        return self._written + len(self._buffer["steps"])

    @property
    def count_on_disk(self) -> int:
        """Frames safely on disk (a crash now keeps exactly these)."""
        return self._written + self._buffer_on_disk

    def flush(self) -> None:
        """Write the buffered frames as the current (partial) chunk, and the manifest."""
        pending = len(self._buffer["steps"])
        if pending > self._buffer_on_disk:
            self._write_chunk()
            self._buffer_on_disk = pending
            self._write_manifest()

    def close(self) -> None:
        """Flush and stop recording (later reports raise). Safe to call twice."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> "ForceRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_chunk(self) -> None:
        arrays = {
            "steps": np.asarray(self._buffer["steps"], dtype=np.int64),
            "time_ps": np.asarray(self._buffer["time_ps"], dtype=np.float64),
            "positions": np.stack(self._buffer["positions"]),
            "forces": np.stack(self._buffer["forces"]),
            "boxes": np.stack(self._buffer["boxes"]),
        }
        atomic_write(self.directory / _chunk_name(self._chunk_index), lambda handle: np.savez(handle, **arrays))

    def _write_manifest(self) -> None:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "count": self.count_on_disk,
            "num_chunks": self._chunk_index + (1 if self._buffer_on_disk else 0),
            "chunk_size": self.chunk_size,
            "report_interval": self.reportInterval,
            "particles": None if self._particles is None else self._particles.tolist(),
            "num_particles": self._num_particles,
            "periodic": self._periodic,
            "dtype": self.dtype,
            "units": UNITS,
        }
        text = json.dumps(manifest, indent=1).encode("utf-8")
        atomic_write(self.directory / MANIFEST, lambda handle: handle.write(text))


def _describe(particles) -> str:
    if particles is None:
        return "None (all)"
    return f"[{len(particles)} indices, first {particles[:5]}]"


def _chunk_length(path: Path) -> int:
    with np.load(path, allow_pickle=False) as data:
        return int(data["steps"].shape[0])


def load_recording(directory: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """Read a :class:`ForceRecorder` directory: every complete chunk, concatenated in chunk order.

    Returns a dict with ``steps`` (int64 (F,)), ``time_ps`` (float64 (F,), ps), ``positions``
    ((F, P, 3), nm), ``forces`` ((F, P, 3), kJ/mol/nm), ``boxes`` ((F, 3, 3), nm, rows a, b, c)
    and ``particles`` (the recorded System indices, or None for all). Temporary files left by an
    interrupted write are ignored. Frames appear in recording order; after resuming from an
    older checkpoint a step can appear twice (keep the later one if that matters).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no recording directory {directory}")
    manifest = _read_manifest(directory)
    chunks = _chunk_files(directory)
    if manifest is None and not chunks:
        raise FileNotFoundError(f"{directory} holds no ForceRecorder recording (no {MANIFEST}, no chunk files)")
    dtype = np.dtype(manifest["dtype"]) if manifest else np.float32
    particles = manifest.get("particles") if manifest else None
    parts: Dict[str, List[np.ndarray]] = {key: [] for key in ("steps", "time_ps", "positions", "forces", "boxes")}
    for path in chunks:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in parts if key not in data.files]
            if missing:
                raise ValueError(f"{path} lacks the arrays {missing}; it is not a ForceRecorder chunk")
            for key in parts:
                parts[key].append(data[key])
    if chunks:
        shapes = {part.shape[1:] for part in parts["positions"]}
        if len(shapes) != 1:
            raise ValueError(f"the chunks of {directory} record different particle counts {sorted(shapes)}; the directory mixes recordings")
        out = {key: np.concatenate(values) for key, values in parts.items()}
    else:
        num = (manifest or {}).get("num_particles") or 0
        out = {
            "steps": np.zeros(0, dtype=np.int64),
            "time_ps": np.zeros(0, dtype=np.float64),
            "positions": np.zeros((0, num, 3), dtype=dtype),
            "forces": np.zeros((0, num, 3), dtype=dtype),
            "boxes": np.zeros((0, 3, 3), dtype=dtype),
        }
    out["particles"] = None if particles is None else np.asarray(particles, dtype=np.int64)
    return out
