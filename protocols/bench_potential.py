"""Cost of one ML energy+force evaluation versus system size, next to classical TIP3P/PME.

For each requested size a periodic TIP3P water box is built (``systems.water.water_box``), and
the same box is timed twice on the same OpenMM platform:

* ML: an (untrained) ``EquivariantPotential(["H", "O"], cutoff)`` as the System's only force,
  through ``multiscale.openmm.torch_force``;
* classical: amber14/TIP3P with PME (``systems.water.tip3p_pme_system``).

Timing protocol, identical for both: ``--warmup`` untimed ``getState(getEnergy=True,
getForces=True)`` calls (default 3: TorchScript's profiling executor re-optimises the model on its
2nd and 3rd calls, which run several times slower than the steady state), then the median wall
time of ``--repeats`` such calls (fewer once the timed calls of one size have taken
``--max-timed-seconds``), each preceded by an untimed ``context.setPositions``. The cost exponent
is the least-squares slope of log(time) versus log(atoms) over all sizes; the ML potential passes
if its exponent is <= 1.1 (linear scaling). The process CPU time of each timed call is recorded
too (``*_cpu_times``; not used for the fit): wall time well above it means the machine was busy
with other work during the measurement.

Writes ``OUT/bench_potential.json`` (after every size, atomically) and ``OUT/bench_potential.png``.

    python protocols/bench_potential.py --out results/bench           # 1k ... 100k atoms
    python protocols/bench_potential.py --quick --out /tmp/bench_quick  # 300, 1k, 3k atoms

On CPU one ML evaluation allocates and frees gigabytes of per-edge tensors, and by default glibc
returns large blocks to the kernel on free, so the next evaluation page-faults them in again
(~0.4 s/GB, more in a VM). The benchmark therefore first calls
``multiscale.runtime.configure_allocator()`` (glibc keeps freed memory for reuse; the run-time
equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>``), as a long MD run of a large
system should. ``--no-allocator-tuning`` measures with glibc's defaults instead. The JSON records
the choice under ``settings.allocator`` and allocator/threading environment variables under
``settings.environment``.

Units: lengths in nm, times in seconds, energies in kJ/mol, memory in MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform as host  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

import multiscale  # noqa: E402,F401  (imports torch before anything can import openmmtorch)
from multiscale.cli import nonnegative_int, output_dir, run_main  # noqa: E402
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import unit  # noqa: E402
from tqdm import tqdm  # noqa: E402

from multiscale.models import EquivariantPotential  # noqa: E402
from multiscale.openmm import BACKENDS, topology_types, torch_force  # noqa: E402
from multiscale.runtime import allocator_info, configure_allocator  # noqa: E402
from systems.water import MIN_BOX_NM, WATER_PER_NM3, tip3p_pme_system, water_box  # noqa: E402

DEFAULT_SIZES = [1000, 3000, 10000, 30000, 100000]
QUICK_SIZES = [300, 1000, 3000]
MIN_ATOMS = 3 * math.ceil(WATER_PER_NM3 * MIN_BOX_NM**3)  # smallest box water_box can build
MAX_EXPONENT = 1.1
CLASSICAL_CUTOFF_NM = 0.9
MEMORY_NOTE = (
    "ML memory grows with the number of edges: at water density and a 0.4 nm cutoff (26 edges "
    "per atom) one energy+force evaluation peaks at roughly 0.1 MB per atom (about 10 GB at "
    "100,000 atoms, with or without allocator tuning), and the edge count grows as cutoff^3; "
    "hence the 0.4 nm default on a 24 GB machine."
)
ENV_PREFIXES = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "OMP_", "MKL_", "OPENMM_")
JSON_NAME = "bench_potential.json"
PNG_NAME = "bench_potential.png"


def platform_names() -> List[str]:
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def timing_fields(prefix: str, timing: dict) -> dict:
    """The JSON row fields of one method's :func:`time_evaluations` result, named ``{prefix}_...``."""
    keys = ("seconds", "times", "cpu_seconds", "cpu_times", "energy_kj_mol")
    return {f"{prefix}_{key}": timing[key] for key in keys}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KiB on Linux)."""
    scale = 1.0 / 1024**2 if sys.platform == "darwin" else 1.0 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def time_evaluations(
    system: openmm.System,
    positions: np.ndarray,
    platform: str,
    warmup: int,
    repeats: int,
    threads: Optional[int] = None,
    max_timed_seconds: float = math.inf,
) -> Dict[str, Any]:
    """``warmup`` untimed, then ``repeats`` timed ``getState(getEnergy, getForces)`` calls (at
    least one; no new one once the timed calls took ``max_timed_seconds``); each is preceded by an
    untimed ``setPositions`` (same coordinates), so every call is a fresh evaluation."""
    integrator = openmm.VerletIntegrator(0.001)
    properties = {"Threads": str(threads)} if threads and platform == "CPU" else {}
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)
    try:
        pos = positions * unit.nanometer
        for _ in range(warmup):  # TorchScript compilation and re-optimisation, PME/FFT plans
            context.setPositions(pos)
            state = context.getState(getEnergy=True, getForces=True)
        times: List[float] = []
        cpu_times: List[float] = []
        while len(times) < repeats and (not times or sum(times) < max_timed_seconds):
            context.setPositions(pos)
            cpu_start = time.process_time()
            start = time.perf_counter()
            state = context.getState(getEnergy=True, getForces=True)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            raise RuntimeError(f"non-finite energy or forces (energy = {energy} kJ/mol)")
        return {
            "seconds": statistics.median(times),
            "times": times,
            "cpu_seconds": statistics.median(cpu_times),
            "cpu_times": cpu_times,
            "energy_kj_mol": energy,
        }
    finally:
        del context, integrator


def ml_system(topology, box: np.ndarray, force: openmm.Force) -> openmm.System:
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * unit.nanometer for row in box))
    system.addForce(force)
    return system


def measure(n_target: int, args: argparse.Namespace, model: EquivariantPotential) -> Dict[str, Any]:
    """One row of the table: build the box, time the ML and classical evaluations."""
    row: Dict[str, Any] = {"target_atoms": n_target, "status": "ok"}
    start = time.perf_counter()
    topology, positions, box = water_box(target_atoms=n_target)
    edge = float(box[0, 0])
    row.update(
        n_atoms=topology.getNumAtoms(),
        n_waters=topology.getNumResidues(),
        box_nm=edge,
        build_seconds=time.perf_counter() - start,
    )

    try:
        i, _, _ = model.neighbors.pairs(torch.as_tensor(positions, dtype=torch.float32), torch.as_tensor(box, dtype=torch.float32))
        row["ml_edges_per_atom"] = i.shape[0] / row["n_atoms"]
        force = torch_force(model, topology_types(topology), periodic=True, backend=args.backend)
        ml = time_evaluations(
            ml_system(topology, box, force), positions, args.platform, args.warmup, args.repeats, args.threads, args.max_timed_seconds
        )
        row.update(timing_fields("ml", ml))
    except (MemoryError, RuntimeError, openmm.OpenMMException) as error:
        row.update(status="failed", ml_seconds=None, ml_error=f"{type(error).__name__}: {error}")
    finally:
        gc.collect()

    # PME needs the cutoff below half the box edge; shrink it for the smallest boxes only.
    cutoff = min(CLASSICAL_CUTOFF_NM, round(0.49 * edge, 3))
    row["classical_cutoff_nm"] = cutoff
    try:
        system = tip3p_pme_system(topology, cutoff_nm=cutoff)
        classical = time_evaluations(system, positions, args.platform, args.warmup, args.repeats, args.threads, args.max_timed_seconds)
        row.update(timing_fields("classical", classical))
    except (MemoryError, RuntimeError, openmm.OpenMMException) as error:
        row.update(status="failed", classical_seconds=None, classical_error=f"{type(error).__name__}: {error}")
    finally:
        gc.collect()

    if row.get("ml_seconds") and row.get("classical_seconds"):
        row["ratio"] = row["ml_seconds"] / row["classical_seconds"]
    else:
        row["ratio"] = None
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def fit_exponent(rows: List[Dict[str, Any]], key: str) -> Optional[float]:
    """Slope of log(time) vs log(atoms) over the rows where ``key`` was measured (None if < 2)."""
    points = [(r["n_atoms"], r[key]) for r in rows if r.get(key)]
    if len(points) < 2 or len({n for n, _ in points}) < 2:
        return None
    n, t = np.array(points, dtype=float).T
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def atomic_write(directory: Path, name: str, write) -> None:
    """Write ``directory/name`` via a temporary file in the same directory and os.replace."""
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def plot(rows: List[Dict[str, Any]], results: Dict[str, Any], stream) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    series = [("ml_seconds", "ml_exponent", "ML potential", "C0", "o"), ("classical_seconds", "classical_exponent", "TIP3P/PME", "C1", "s")]
    for key, exponent_key, label, color, marker in series:
        points = [(r["n_atoms"], r[key]) for r in rows if r.get(key)]
        if not points:
            continue
        n, t = np.array(points, dtype=float).T
        exponent = results[exponent_key]
        text = f"{label}" + (f" (slope {exponent:.2f})" if exponent is not None else "")
        ax.loglog(n, t, marker=marker, linestyle="none", color=color, label=text)
        if exponent is not None:
            slope, intercept = np.polyfit(np.log(n), np.log(t), 1)
            grid = np.geomspace(n.min(), n.max(), 50)
            ax.loglog(grid, np.exp(intercept) * grid**slope, linestyle="--", color=color, linewidth=1)
    settings = results["settings"]
    ax.set_xlabel("atoms")
    ax.set_ylabel("seconds per energy + force evaluation")
    threads = settings["host"]["torch_threads"]
    ax.set_title(f"{settings['platform']} platform, ML cutoff {settings['cutoff_nm']} nm, {settings['backend']}, {threads} torch thread(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(stream, format="png", dpi=120)
    plt.close(fig)


def package_version(name: str) -> Optional[str]:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one ML energy+force evaluation vs. system size (water boxes), next to classical TIP3P/PME.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=output_dir, required=True, help="output directory for bench_potential.json/.png")
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help=f"target atom counts (>= {MIN_ATOMS})")
    parser.add_argument("--quick", action="store_true", help=f"use sizes {QUICK_SIZES} (overrides --sizes)")
    parser.add_argument("--cutoff", type=float, default=0.4, help="ML cutoff in nm. " + MEMORY_NOTE)
    parser.add_argument("--backend", choices=BACKENDS, default="torchforce", help="how the ML model runs inside OpenMM")
    parser.add_argument("--platform", default="CPU", help=f"OpenMM platform (available here: {', '.join(platform_names())})")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed evaluations per size and method (median taken); see --max-timed-seconds"
    )
    parser.add_argument(
        "--max-timed-seconds",
        type=float,
        default=60.0,
        help="start no further timed evaluation of a size once its timed evaluations took this long (at least one is "
        "always timed); bounds the run time of slow models at the largest sizes",
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed evaluations first (TorchScript optimises the model on its 2nd/3rd call)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (torch.set_num_threads) and for OpenMM's CPU platform; default: their own defaults "
        "(all cores). Use 1 on a machine shared with other busy processes: multi-threaded torch then stalls "
        "for seconds per call",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="torch seed for the (untrained) model weights")
    parser.add_argument(
        "--no-allocator-tuning",
        dest="allocator_tuning",
        action="store_false",
        help="leave glibc's malloc at its defaults (freed large blocks go back to the kernel and are page-faulted "
        "in again on the next evaluation) instead of calling multiscale.runtime.configure_allocator()",
    )
    args = parser.parse_args(argv)

    if args.quick:
        args.sizes = list(QUICK_SIZES)
    small = [n for n in args.sizes if n < MIN_ATOMS]
    if small:
        parser.error(f"--sizes {small} too small: the smallest water box has {MIN_ATOMS} atoms (a 1 nm cube)")
    args.sizes = sorted(set(args.sizes))
    if not (0 < args.cutoff <= 5.0):
        parser.error(f"--cutoff must be a distance in nm in (0, 5], got {args.cutoff}")
    if args.warmup < 1:
        parser.error(f"--warmup must be >= 1 (the first call compiles), got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not args.max_timed_seconds > 0:
        parser.error(f"--max-timed-seconds must be > 0, got {args.max_timed_seconds}")
    names = platform_names()
    if args.platform not in names:
        parser.error(f"unknown OpenMM platform {args.platform!r}; valid platforms here are {names}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    allocator_tuned = configure_allocator(keep_freed_memory=True) if args.allocator_tuning else False
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = EquivariantPotential(["H", "O"], cutoff=args.cutoff)

    settings = {
        "cutoff_nm": args.cutoff,
        "backend": args.backend,
        "platform": args.platform,
        "sizes": args.sizes,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "max_timed_seconds": args.max_timed_seconds,
        "seed": args.seed,
        "classical": {"model": "amber14/tip3p", "nonbonded": "PME", "cutoff_nm": CLASSICAL_CUTOFF_NM, "ewald_error_tolerance": 5e-4,
                      "constraints": "HBonds", "rigid_water": True},
        "timing": "median wall time of getState(getEnergy=True, getForces=True) after `warmup` untimed "
        "calls; an untimed setPositions (same coordinates) precedes each call; `repeats` timed calls, fewer once "
        "they took `max_timed_seconds`",
        "model_runtime": {"chunk_edges": getattr(model, "chunk_edges", None)},
        "memory_note": MEMORY_NOTE,
        "model": model.config.to_dict(),
        "versions": {
            "python": host.python_version(),
            "torch": torch.__version__,
            "openmm": openmm.__version__,
            "openmmtorch": package_version("openmmtorch"),
            "e3nn": package_version("e3nn"),
            "vesin-torch": package_version("vesin-torch"),
            "numpy": np.__version__,
        },
        # Allocator and threading settings change the timings a lot (see the module docstring).
        "allocator": dict(allocator_info(), tuning_requested=args.allocator_tuning, tuning_applied=allocator_tuned),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "host": {
            "machine": host.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "openmm_cpu_threads": args.threads or openmm.Platform.getPlatformByName("CPU").getPropertyDefaultValue("Threads"),
        },
    }
    rows: List[Dict[str, Any]] = []
    results: Dict[str, Any] = {}

    def save() -> None:
        results.clear()
        results.update(
            settings=settings,
            rows=rows,
            ml_exponent=fit_exponent(rows, "ml_seconds"),
            classical_exponent=fit_exponent(rows, "classical_seconds"),
            max_exponent=MAX_EXPONENT,
        )
        exponent = results["ml_exponent"]
        results["pass"] = None if exponent is None else bool(exponent <= MAX_EXPONENT)
        atomic_write(args.out, JSON_NAME, lambda s: s.write(json.dumps(results, indent=2).encode()))
        atomic_write(args.out, PNG_NAME, lambda s: plot(rows, results, s))

    for n_target in tqdm(args.sizes, desc="sizes", unit="box"):
        try:
            row = measure(n_target, args, model)
        except (MemoryError, RuntimeError, openmm.OpenMMException) as error:
            row = {"target_atoms": n_target, "status": "failed", "error": f"{type(error).__name__}: {error}", "peak_rss_mb": peak_rss_mb()}
        rows.append(row)
        save()
        if row["status"] != "ok":
            tqdm.write(f"{n_target} atoms failed: " + "; ".join(str(row[k]) for k in ("error", "ml_error", "classical_error") if k in row))

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-"

    print(f"\n{'atoms':>8} {'edges/atom':>10} {'ML s':>10} {'ML cpu s':>10} {'PME s':>10} {'ML/PME':>8} {'peak MB':>9}  status")
    for r in rows:
        print(
            f"{fmt(r.get('n_atoms'), 'd'):>8} {fmt(r.get('ml_edges_per_atom'), '.1f'):>10} {fmt(r.get('ml_seconds'), '.4f'):>10} "
            f"{fmt(r.get('ml_cpu_seconds'), '.4f'):>10} "
            f"{fmt(r.get('classical_seconds'), '.4f'):>10} {fmt(r.get('ratio'), '.1f'):>8} {fmt(r.get('peak_rss_mb'), '.0f'):>9}  {r['status']}"
        )
    print(f"\ncost exponent  ML: {fmt(results['ml_exponent'], '.3f')}   TIP3P/PME: {fmt(results['classical_exponent'], '.3f')}")
    verdict = {True: "PASS", False: "FAIL", None: "n/a (fewer than 2 ML sizes measured)"}[results["pass"]]
    print(f"ML exponent <= {MAX_EXPONENT}: {verdict}")
    print(f"wrote {args.out / JSON_NAME} and {args.out / PNG_NAME}")
    return 0 if results["pass"] is not False else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
