#!/usr/bin/env python
"""In-model PME (multiscale.electrostatics.Coulomb on torch-pme) against OpenMM's CPU PME, at
equal force accuracy, on TIP3P-charged water boxes.

    python protocols/bench_electrostatics.py --out DIR [--quick] [--sizes 3000 30000] [--repeats 5]

For each size: a periodic water box (``systems.water.water_box``) with TIP3P charges
(O −0.834 e, H +0.417 e) and each molecule's three intramolecular pairs excluded; one thread for
both engines (OpenMM CPU ``Threads=1``, ``torch.set_num_threads(1)``). Each engine runs at each
real-space cutoff of ``--cutoffs`` (default 0.5, 0.7 and 1.0 nm: a shorter cutoff moves work
from the pair sum to the mesh; 0.5 nm is a typical short-range model's cutoff, where the hybrid
model shares one neighbour list) and is reported at its fastest setting that reaches the target.

1. Reference forces: ``Coulomb(method="pme", tolerance=1e-5, dtype="float64")`` (its error is
   ~100× below the target; checked against OpenMM's Reference platform in
   tests/test_electrostatics.py).
2. Each engine's ``ewaldErrorTolerance`` is scanned (2e-3, 1e-3, 5e-4, ... 2e-5); the largest
   that gives a relative RMS force error rms(F − F_ref)/rms(F_ref) ≤ ``--target`` (1e-3) is used.
3. Time per energy+force evaluation at that tolerance: median and spread (min, max) of
   ``--repeats`` calls after one warm-up; the ratio in-model / OpenMM (each at its fastest
   cutoff) in the same run, and at the common 1.0 nm cutoff. The in-model time is split into the
   neighbour list, the real-space sum and the mesh (each forward + backward).

Writes ``DIR/bench_electrostatics.json`` atomically after every size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import openmm  # noqa: E402
from openmm import unit  # noqa: E402

from multiscale.atomic import atomic_write_json  # noqa: E402
from multiscale.cli import run_main  # noqa: E402
from multiscale.electrostatics import Coulomb  # noqa: E402
from multiscale.openmm.electrostatics import fixed_charge_system  # noqa: E402
from systems.water import water_box  # noqa: E402

TIP3P_CHARGES = {"O": -0.834, "H": 0.417}
TOLERANCES = (2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5)
CUTOFF_NM = 1.0


def water_charges(topology):
    charges, masses, exclusions = [], [], []
    for residue in topology.residues():
        atoms = list(residue.atoms())
        for atom in atoms:
            charges.append(TIP3P_CHARGES[atom.element.symbol])
            masses.append(atom.element.mass.value_in_unit(unit.dalton))
        index = [a.index for a in atoms]
        exclusions += [(index[a], index[b]) for a in range(len(index)) for b in range(a + 1, len(index))]
    return np.array(charges), masses, exclusions


def rms_error(forces, reference) -> float:
    return float(np.sqrt(np.mean((forces - reference) ** 2)) / np.sqrt(np.mean(reference**2)))


class OpenMMEngine:
    def __init__(self, charges, masses, exclusions, box, positions, tolerance, cutoff=CUTOFF_NM):
        system = fixed_charge_system(charges, masses, box=box, cutoff=cutoff, tolerance=tolerance, exclusions=exclusions)
        platform = openmm.Platform.getPlatformByName("CPU")
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": "1"})
        self.context.setPositions(positions)

    def forces(self):
        state = self.context.getState(getEnergy=True, getForces=True)
        return state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)


class TorchEngine:
    def __init__(self, charges, exclusions, box, positions, tolerance, dtype="float32", cutoff=CUTOFF_NM):
        self.coulomb = Coulomb(cutoff, "pme", tolerance, dtype=dtype, exclusions=exclusions)
        self.q = torch.tensor(charges)
        self.box = torch.tensor(box)
        self.positions = torch.tensor(positions)

    def forces(self):
        x = self.positions.clone().requires_grad_(True)
        energy = self.coulomb(x, self.q, self.box)
        return -torch.autograd.grad(energy, x)[0].to(torch.float64).numpy()

    def neighbour_list_seconds(self) -> float:
        pos, cell = self.coulomb.prepare(self.positions, self.box)
        start = time.perf_counter()
        self.coulomb.pairs(pos, cell)
        return time.perf_counter() - start

    def profile(self, repeats: int = 3) -> Dict[str, float]:
        """Median seconds of the neighbour list, the real-space sum and the mesh part (forward +
        backward each), through torch-pme's own two halves."""
        coulomb = self.coulomb
        pos, cell = coulomb.prepare(self.positions, self.box)
        q = self.q.to(pos.dtype).unsqueeze(1)
        i, j, shifts = coulomb.pairs(pos, cell)

        def real_space():
            x = pos.clone().requires_grad_(True)
            d = torch.linalg.norm(x[j] - x[i] + shifts @ cell, dim=1)
            energy = (q * coulomb.calculator._compute_rspace(q, torch.stack([i, j], 1), d)).sum()
            torch.autograd.grad(energy, x)

        def mesh():
            x = pos.clone().requires_grad_(True)
            energy = (q * coulomb.calculator._compute_kspace(q, cell, x)).sum()
            torch.autograd.grad(energy, x)

        return {"neighbour_list_s": timed(lambda: coulomb.pairs(pos, cell), repeats)["median_s"],
                "real_space_s": timed(real_space, repeats)["median_s"], "mesh_s": timed(mesh, repeats)["median_s"],
                "pairs": int(i.shape[0])}


def timed(call, repeats: int) -> Dict[str, float]:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def measure(target_atoms: int, args) -> Dict[str, object]:
    topology, positions, box = water_box(target_atoms=target_atoms)
    positions = np.asarray(positions, dtype=float)
    charges, masses, exclusions = water_charges(topology)
    print(f"[{len(charges)} atoms] reference forces (torch-pme PME, tolerance 1e-5, float64) ...", flush=True)
    reference = TorchEngine(charges, exclusions, box, positions, 1e-5, "float64").forces()
    result: Dict[str, object] = {"atoms": len(charges), "box_nm": np.asarray(box).tolist(), "cutoffs_nm": list(args.cutoffs)}
    for name, make in (
        ("openmm_cpu_pme", lambda tol, rc: OpenMMEngine(charges, masses, exclusions, box, positions, tol, rc)),
        ("multiscale_pme", lambda tol, rc: TorchEngine(charges, exclusions, box, positions, tol, cutoff=rc)),
    ):
        per_cutoff = []
        for cutoff in args.cutoffs:
            scan: List[Dict[str, float]] = []
            chosen = None
            for tol in TOLERANCES:
                engine = make(tol, cutoff)
                error = rms_error(engine.forces(), reference)
                scan.append({"tolerance": tol, "relative_rms_force_error": error})
                if error <= args.target:
                    chosen = (tol, error, engine)
                    break
            if chosen is None:
                print(f"  {name:15s} cutoff {cutoff:g} nm: no tolerance reaches {args.target:g} (best {error:.2e})", flush=True)
                continue
            tol, error, engine = chosen
            entry = {"cutoff_nm": cutoff, "tolerance": tol, "relative_rms_force_error": error, "scan": scan,
                     **timed(engine.forces, args.repeats)}
            if isinstance(engine, TorchEngine):
                entry.update(engine.profile())
                entry["mesh"] = engine.coulomb.describe(box).get("mesh")
            extra = (f"; list {entry['neighbour_list_s'] * 1e3:.0f} ms, real space {entry['real_space_s'] * 1e3:.0f} ms, "
                     f"mesh {entry['mesh_s'] * 1e3:.0f} ms") if "mesh_s" in entry else ""
            print(f"  {name:15s} cutoff {cutoff:g} nm, tolerance {tol:.0e} (error {error:.1e}): {entry['median_s'] * 1e3:8.1f} ms "
                  f"(min {entry['min_s'] * 1e3:.1f}, max {entry['max_s'] * 1e3:.1f}){extra}", flush=True)
            per_cutoff.append(entry)
        if not per_cutoff:
            raise RuntimeError(f"{name}: no cutoff and tolerance reached the target {args.target}")
        best = min(per_cutoff, key=lambda e: e["median_s"])
        result[name] = {**best, "per_cutoff": per_cutoff}
    result["ratio_multiscale_over_openmm"] = result["multiscale_pme"]["median_s"] / result["openmm_cpu_pme"]["median_s"]
    common = [(a, b) for a in result["multiscale_pme"]["per_cutoff"] for b in result["openmm_cpu_pme"]["per_cutoff"]
              if a["cutoff_nm"] == b["cutoff_nm"] == CUTOFF_NM]
    if common:
        result["ratio_at_1nm_cutoff"] = common[0][0]["median_s"] / common[0][1]["median_s"]
    print(f"  ratio in-model / OpenMM, each at its fastest cutoff ({result['multiscale_pme']['cutoff_nm']:g} vs "
          f"{result['openmm_cpu_pme']['cutoff_nm']:g} nm): {result['ratio_multiscale_over_openmm']:.1f}x"
          + (f"; at 1.0 nm both: {result['ratio_at_1nm_cutoff']:.1f}x" if common else ""), flush=True)
    return result


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000], help="approximate atom counts")
    parser.add_argument("--quick", action="store_true", help="3,000 atoms only, 3 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target", type=float, default=1e-3, help="relative RMS force error both engines must reach")
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[0.5, 0.7, 1.0], help="real-space cutoffs (nm) to try")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [3000], 3
    if args.repeats < 1 or any(n < 100 for n in args.sizes) or not 0 < args.target < 1:
        parser.error("--repeats must be >= 1, --sizes >= 100 atoms, 0 < --target < 1")
    if any(not 0.3 <= c <= 2.0 for c in args.cutoffs):
        parser.error("--cutoffs are real-space cutoffs in nm, between 0.3 and 2.0 (1.0 nm = 10 Å)")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results = {"threads": 1, "target_relative_rms_force_error": args.target, "sizes": []}
    for n in args.sizes:
        results["sizes"].append(measure(n, args))
        atomic_write_json(out / "bench_electrostatics.json", results)
    print(f"wrote {out / 'bench_electrostatics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
