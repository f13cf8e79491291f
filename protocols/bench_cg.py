#!/usr/bin/env python
"""Cost of a CG step against bead count, for each CG model family with and without multiple time
stepping, and of the fine (TraPPE-UA, constrained) reference against site count, in one run.

    python protocols/bench_cg.py --jobs DIR [DIR ...] [--out bench_cg.json] [--max-beads 100000] [--profile] [--single-core]

Each DIR is a finished ``protocols/polymer_cg.py`` job; a job fitted with model_family "network"
gives the network family (priors + bead network), one with "tabulated" the MS-CG family (the
model the job ran, after its bonded refinements), timed in both its forms: "tabulated/tables"
(tabulated functions) and "tabulated/closed" (polynomials). Its
last CG frame (and the fine model's last recorded frame) is tiled n×n×n times to reach 10²–10⁵
beads (the fine melt to as many sites). Each point is the median wall time per step over timed blocks after a warm-up; speeds are
also given as ratios to the fine reference of the same melt (6 sites per bead in the quick
preset), measured in this run. Writes the JSON and a PNG next to it (``--out``).

``--single-core`` adds the fine reference and the closed-form tabulated family with MTS on one
CPU thread pinned to one core (``threads: single_core`` rows; :mod:`multiscale.openmm.affinity`),
as the quick job runs its CG model: where the platform's cross-core wake-ups cost more than a
second thread saves. The ratios are then taken against the fine reference's faster configuration
at each size.

``--kernels`` adds what OpenMM's CPU kernels cost for each form a CG term can take, on the same
tiled frames of the first job: the pair force as the tabulated family ships it (one table lookup
per pair, picked by type), one table for all pairs, a closed-form expression, and OpenMM's own
NonbondedForce; bonds and angles as tables (CustomCompoundBondForce), as expressions
(CustomBondForce, CustomAngleForce) and as OpenMM's harmonic forces; and one integrator step of
a System with no force (JSON key ``kernel_costs``: ms per energy-and-forces call at fixed
positions, so neighbour lists are built once). The forms of a term evaluate one stand-in
potential (a 12-6 pair; a polynomial bond and angle, tabulated or as an expression), so their
energies agree (``energy_kj_mol``) and only their cost differs. It says which forms a faster CG
tier has to take.

``--profile`` adds, for the network family, the bead network's own cost per call (energy and
forces, eager PyTorch, outside OpenMM) at every bead count, and at the smallest one where that
time goes: torch.profiler's operators by self time, with how many operators one call runs (JSON
key ``network_profile``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
import numpy as np  # noqa: E402
import openmm  # noqa: E402
from openmm import unit  # noqa: E402
from tqdm import tqdm  # noqa: E402

from multiscale.atomic import atomic_write_bytes, atomic_write_json  # noqa: E402
from multiscale.cli import positive_int, run_main  # noqa: E402
from multiscale.openmm.affinity import single_core  # noqa: E402

#: MTS variant of a job that ran without MTS: pair/network forces every MTS_INNER bonded steps (a
#: job that ran with MTS is timed with its own number of bonded sub-steps)
MTS_INNER = 3
#: tiling factors n (n³ copies of the job's melt)
TILES = (1, 2, 3, 4, 6, 8)
#: the thread configurations timed: the platform's default, and one thread pinned to one core
THREAD_CONFIGURATIONS = ("default", "single_core")


def tile(positions, box, n, *index_lists):
    """n³ copies of ``positions`` (N, 3) in an orthorhombic ``box`` (3, 3), and of each index list
    (bonds, angles, ...) shifted per copy."""
    lengths = np.diag(box)
    if not np.allclose(box, np.diag(lengths)):
        raise ValueError("tiling needs an orthorhombic box")
    shifts = np.array([(i, j, k) for i in range(n) for j in range(n) for k in range(n)], dtype=float) * lengths
    count = len(positions)
    x = np.concatenate([positions + s for s in shifts])
    tiled = [np.concatenate([np.asarray(ix, dtype=np.int64).reshape(-1, np.asarray(ix).shape[-1] if len(ix) else 1) + c * count
                             for c in range(len(shifts))]) if len(ix) else np.zeros((0, 2), int) for ix in index_lists]
    return x, np.diag(lengths * n), tiled


def time_steps(system, positions, box, integrator, platform, budget_s=3.0, blocks=3):
    """Median wall seconds per step (after warm-up), stepping blocks of ~budget_s / blocks."""
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in box])
    context.setPositions(positions)
    if system.getNumConstraints():
        context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(450 * unit.kelvin, 1)
    start = time.perf_counter()
    integrator.step(2)
    context.getState(getEnergy=True)
    first = max((time.perf_counter() - start) / 2, 1e-6)
    steps = max(int(budget_s / blocks / first), 1)
    per_step = []
    for _ in range(blocks):
        start = time.perf_counter()
        integrator.step(steps)
        context.getState(getEnergy=True)
        per_step.append((time.perf_counter() - start) / steps)
    del context
    return float(np.median(per_step)), per_step


def network_call_cost(model, positions, box, types, *, calls: int = 5, top: int = 12, breakdown: bool = False):
    """The bead network's energy-and-forces call (``model.compute``, eager) on one frame: median
    wall ms per call over ``calls`` after a warm-up, and with ``breakdown`` torch.profiler's
    operators by self CPU time per call (the ``top`` most costly) and the operators per call."""
    import torch

    model.compute(positions, types, box)  # warm-up (allocations, neighbour list)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.compute(positions, types, box)
        times.append(time.perf_counter() - start)
    row = {"beads": len(positions), "ms_per_call": 1e3 * float(np.median(times)), "threads": torch.get_num_threads()}
    if breakdown:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model.compute(positions, types, box)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        self_total = sum(e.self_cpu_time_total for e in events)  # µs; self times do not overlap
        row.update({"profiled_ms_per_call": self_total / calls / 1e3,
                    "operators_per_call": sum(e.count for e in events) / calls,
                    "distinct_operators": len(events),
                    "top": [{"operator": e.key, "self_ms_per_call": e.self_cpu_time_total / calls / 1e3,
                             "count_per_call": e.count / calls, "share": e.self_cpu_time_total / self_total}
                            for e in events[:top]]})
    return row


#: the forms ``--kernels`` times, by term: the first of each is what the tabulated family ships
KERNEL_FORMS = {
    "pairs": ("table by type pair (shipped)", "one table", "expression", "NonbondedForce"),
    "bonds": ("table (shipped)", "expression", "HarmonicBondForce"),
    "angles": ("table (shipped)", "expression", "HarmonicAngleForce"),
    "integrator": ("LangevinMiddle step, no force",),
}
#: the stand-in potentials the kernel forms evaluate (their cost, not their physics, is measured):
#: a 12-6 pair of this sigma (nm) and epsilon (kJ/mol), tabulated every KERNEL_TABLE_SPACING_NM,
#: and bond/angle polynomials of KERNEL_POLYNOMIAL_ORDER, as a fitted table would be projected
KERNEL_SIGMA_NM, KERNEL_EPSILON = 0.45, 0.5
KERNEL_TABLE_SPACING_NM = 0.0005
KERNEL_TABLE_PAD = 8
KERNEL_POLYNOMIAL_ORDER = 6


def _kernel_force(term: str, form: str, n: int, types, bonds, angles, cutoff_nm: float):
    """One OpenMM force of ``term`` in ``form`` over ``n`` particles (None for the bare integrator)."""
    sigma, eps = KERNEL_SIGMA_NM, KERNEL_EPSILON
    if term == "pairs":
        # knots every KERNEL_TABLE_SPACING_NM from 0.6 sigma to the cutoff (the shipped tables' default
        # spacing), KERNEL_TABLE_PAD more either side (the 12-6 below, 0 past the cutoff), so that the
        # cubic spline does not ring where one type pair's table meets the next
        r_lo = 0.6 * sigma
        pad = KERNEL_TABLE_PAD
        grid = r_lo + KERNEL_TABLE_SPACING_NM * np.arange(-pad, int(np.ceil((cutoff_nm - r_lo) / KERNEL_TABLE_SPACING_NM)) + 1 + pad)
        u = np.where(grid <= cutoff_nm, 4 * eps * ((sigma / grid) ** 12 - (sigma / grid) ** 6), 0.0)  # unshifted, as NonbondedForce
        span = (len(grid) - 1) * KERNEL_TABLE_SPACING_NM
        codes = {t: k for k, t in enumerate(sorted(set(types)))}
        if form == "NonbondedForce":
            force = openmm.NonbondedForce()
            force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
            force.setUseDispersionCorrection(False)
            for _ in range(n):
                force.addParticle(0.0, sigma, eps)
            for i, j in bonds:
                force.addException(int(i), int(j), 0.0, sigma, 0.0)
        else:
            if form == "expression":
                force = openmm.CustomNonbondedForce(f"4*{eps}*((({sigma}/r)^6)^2-({sigma}/r)^6)")
            elif form == "one table":
                force = openmm.CustomNonbondedForce(f"upair(r-{float(grid[0])!r})")
                force.addTabulatedFunction("upair", openmm.Continuous1DFunction(u.tolist(), 0.0, span))
            else:  # the shipped form: every ordered type pair's table end to end, picked by an offset
                m = len(codes)  # arithmetic on the type codes (multiscale.openmm.tabulated says why)
                step = len(grid) * KERNEL_TABLE_SPACING_NM
                force = openmm.CustomNonbondedForce(f"upair(r-{float(grid[0])!r}+{step!r}*({m}*type1+type2))")
                force.addTabulatedFunction("upair", openmm.Continuous1DFunction(
                    np.tile(u, m * m).tolist(), 0.0, (m * m * len(grid) - 1) * KERNEL_TABLE_SPACING_NM))
            force.addPerParticleParameter("type")
            for t in types:
                force.addParticle([float(codes[t])])
            for i, j in bonds:
                force.addExclusion(int(i), int(j))
            force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        force.setCutoffDistance(cutoff_nm)
        return force
    if term == "integrator":
        return None
    width = 2 if term == "bonds" else 3
    rows = np.asarray(bonds if term == "bonds" else angles, dtype=int).reshape(-1, width)
    centre, lo, hi = (0.45, 0.2, 0.8) if term == "bonds" else (2.6, 0.0, np.pi)
    variable = "distance(p1,p2)" if term == "bonds" else "angle(p1,p2,p3)"
    polynomial = "+".join(f"{k + 1}*(x-{centre})^{k + 2}" for k in range(KERNEL_POLYNOMIAL_ORDER - 1))
    if form == "table (shipped)":  # the expression's polynomial, tabulated
        grid = np.linspace(lo, hi, 201)
        values = sum((k + 1) * (grid - centre) ** (k + 2) for k in range(KERNEL_POLYNOMIAL_ORDER - 1))
        # as multiscale.openmm.tabulated builds it: analytic walls outside the knots, per-term parameters
        force = openmm.CustomCompoundBondForce(
            width, f"select(step(lo-x), ulo+flo*(lo-x)+hw*(lo-x)^2, select(step(x-hi), uhi-fhi*(x-hi)+hw*(x-hi)^2, u(x-lo))); x={variable}")
        force.addTabulatedFunction("u", openmm.Continuous1DFunction(values.tolist(), 0.0, hi - lo))
        for name in ("lo", "hi", "ulo", "uhi", "flo", "fhi", "hw"):
            force.addPerBondParameter(name)
        for row in rows:
            force.addBond([int(i) for i in row], [lo, hi, 0.0, 0.0, 0.0, 0.0, 100.0])
    elif form == "expression":
        force = (openmm.CustomBondForce(f"{polynomial}; x=r") if term == "bonds"
                 else openmm.CustomAngleForce(f"{polynomial}; x=theta"))
        for row in rows:
            (force.addBond if term == "bonds" else force.addAngle)(*[int(i) for i in row], [])
    elif term == "bonds":
        force = openmm.HarmonicBondForce()
        for i, j in rows:
            force.addBond(int(i), int(j), centre, 1500.0)
    else:
        force = openmm.HarmonicAngleForce()
        for i, j, k in rows:
            force.addAngle(int(i), int(j), int(k), centre, 10.0)
    force.setUsesPeriodicBoundaryConditions(True)
    return force


def kernel_costs(positions, box, masses, types, bonds, angles, *, cutoff_nm: float, platform: str = "CPU",
                 budget_s: float = 1.0, blocks: int = 3):
    """ms per energy-and-forces call of each :data:`KERNEL_FORMS` form on one frame (the median of
    ``blocks``, after a warm-up), and of one integrator step with no force; one row per form."""
    rows = []
    for term, forms in KERNEL_FORMS.items():
        for form in forms:
            system = openmm.System()
            for mass in masses:
                system.addParticle(float(mass))
            system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in box])
            force = _kernel_force(term, form, len(positions), types, bonds, angles, cutoff_nm)
            if force is not None:
                system.addForce(force)
            integrator = openmm.LangevinMiddleIntegrator(450, 1.0, 0.02)
            context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
            context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in box])
            context.setPositions(positions)

            def call():
                if force is None:
                    integrator.step(1)
                    return 0.0
                return context.getState(getEnergy=True, getForces=True).getPotentialEnergy().value_in_unit(
                    unit.kilojoule_per_mole)

            energy = call()
            start = time.perf_counter()
            call()
            first = max(time.perf_counter() - start, 1e-6)
            repeats = max(int(budget_s / blocks / first), 3)
            per_call = []
            for _ in range(blocks):
                start = time.perf_counter()
                for _ in range(repeats):
                    call()
                per_call.append((time.perf_counter() - start) / repeats)
            del context
            rows.append({"beads": len(positions), "term": term, "form": form, "ms_per_call": 1e3 * float(np.median(per_call)),
                         "energy_kj_mol": energy, "cutoff_nm": cutoff_nm, "blocks_ms": [1e3 * t for t in per_call],
                         "terms": {"pairs": len(positions), "bonds": len(bonds), "angles": len(angles)}.get(term, 0)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", nargs="+", required=True, type=Path, help="finished polymer_cg job folders")
    p.add_argument("--out", type=Path, default=Path("bench_cg.json"))
    p.add_argument("--max-beads", type=positive_int, default=100_000)
    p.add_argument("--platform", default="CPU")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed stepping per point")
    p.add_argument("--profile", action="store_true", help="also the network's own cost per call and its operators")
    p.add_argument("--single-core", action="store_true",
                   help="also time the fine reference and the tabulated family with MTS on one CPU thread pinned to one core "
                        "(multiscale.openmm.affinity; rows with threads: single_core)")
    p.add_argument("--kernels", action="store_true", help="also OpenMM's cost for each form a CG term can take (pairs, bonds, angles)")
    args = p.parse_args(argv)
    one_core = args.single_core and args.platform == "CPU"
    from multiscale.cg.mapping import Mapping
    from multiscale.cg.priors.records import Priors
    from multiscale.cg.tabulated import TabulatedModel
    from multiscale.openmm.assembly import MLTerm, PriorTerms, assemble_system
    from multiscale.openmm.mts import mts_langevin
    from multiscale.openmm.recording import load_recording
    from multiscale.openmm.tabulated import FORMS as TABULATED_FORMS, TabulatedTerms
    from systems.polyethylene import trappe_system
    import mdtraj

    families = {}
    fine = None
    for job in args.jobs:
        settings_path = job / "settings.json"
        if not (job / "report.json").is_file() or not (job / "mapping.json").is_file():
            raise ValueError(f"{job} is not a finished polymer_cg job (no report.json/mapping.json); run protocols/polymer_cg.py first")
        report = json.loads((job / "report.json").read_text())
        family = report.get("model_family", "network")
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        settings = settings.get("settings", settings)
        mapping = Mapping.load(job / "mapping.json")
        cg = mdtraj.load_dcd(str(job / "cg.dcd"), top=str(job / "cg.pdb"))
        families[family] = dict(job=job, mapping=mapping, x=cg.xyz[-1].astype(float), box=cg.unitcell_vectors[-1].astype(float),
                                priors=Priors.from_dict(json.loads((job / "priors.json").read_text())),
                                model_path=job / "model" / "model.ckpt",
                                # the model the job ran: after its bonded refinements, if any
                                tabulated=next((job / name for name in ("tabulated_refined.json", "tabulated.json")
                                                if (job / name).is_file()), job / "tabulated.json"),
                                dt=report["extra"]["timesteps_ps"]["cg"] / report["extra"]["timesteps_ps"].get("cg_inner_steps", 1),
                                inner=max(int(report["extra"]["timesteps_ps"].get("cg_inner_steps", 1)), 1),
                                settings=settings)
        if fine is None:
            rec = load_recording(job / "fine" / "recording")
            fine = dict(x=rec["positions"][-1].astype(float), box=rec["boxes"][-1].astype(float),
                        pdb=job / "fine" / "melt.pdb", cutoff=float(settings.get("fine_cutoff_nm", 1.0)),
                        dt=report.get("reference_speed", {}).get("timestep_ps", 0.005))
    from openmm import app

    fine_top = app.PDBFile(str(fine["pdb"])).topology
    fine_bonds = np.array([(b[0].index, b[1].index) for b in fine_top.bonds()])
    results = {"platform": args.platform, "fine": [], "cg": [], "network_profile": [], "kernel_costs": []}
    base_sites = len(fine["x"])
    for n in tqdm(TILES, desc="fine reference"):
        if base_sites * n ** 3 > args.max_beads:
            break
        x, box, _ = tile(fine["x"], fine["box"], n)
        top = app.Topology()
        for c in range(n ** 3):
            for chain in fine_top.chains():
                new_chain = top.addChain()
                residue = top.addResidue("PE", new_chain)
                for atom in chain.atoms():
                    top.addAtom(atom.name, atom.element, residue)
        atoms = list(top.atoms())
        for c in range(n ** 3):
            for i, j in fine_bonds:
                top.addBond(atoms[i + c * base_sites], atoms[j + c * base_sites])
        for threads in THREAD_CONFIGURATIONS[: 2 if one_core else 1]:
            system = trappe_system(top, box, cutoff_nm=fine["cutoff"], constrain_bonds=True)
            integrator = openmm.LangevinMiddleIntegrator(450, 1.0, fine["dt"])
            with single_core(threads == "single_core"):
                per_step, blocks = time_steps(system, x, box, integrator, args.platform, args.budget)
            results["fine"].append({"sites": len(x), "threads": threads, "seconds_per_step": per_step, "blocks": blocks,
                                    "timestep_ps": fine["dt"], "ps_per_wall_second": fine["dt"] / per_step})
    for family, data in families.items():
        mapping = data["mapping"]
        model = None
        if family == "network":
            from multiscale.models import load_model

            model = load_model(data["model_path"])
        tabulated = TabulatedModel.load(data["tabulated"]) if family == "tabulated" else None
        for n in tqdm(TILES, desc=f"{family} CG"):
            beads = mapping.n_beads * n ** 3
            if beads > args.max_beads:
                break
            x, box, (bonds, angles, dihedrals) = tile(data["x"], data["box"], n, mapping.bead_bonds, mapping.bead_angles,
                                                      mapping.bead_dihedrals)
            types = list(mapping.bead_types) * n ** 3
            masses = np.tile(mapping.bead_masses, n ** 3)
            if args.kernels and family == next(iter(families)):
                # the family's pair range, within half the (tiled) box
                cutoff = float(tabulated.cutoff_nm) if tabulated is not None else float(data["settings"].get("prior_cutoff_nm", 1.0))
                cutoff = min(cutoff, 0.49 * float(np.min(np.diag(box))))
                results["kernel_costs"].extend(kernel_costs(x, box, masses, types, bonds, angles, cutoff_nm=cutoff,
                                                            platform=args.platform, budget_s=args.budget))
            if family == "network" and args.profile:
                results["network_profile"].append(network_call_cost(model, x, box, types, breakdown=n == TILES[0]))
            if family == "network":
                variants = {"network": [PriorTerms(data["priors"], types, bonds, angles, [],
                                                   nonbonded_cutoff_nm=float(data["settings"].get("prior_cutoff_nm", 1.0)),
                                                   periodic=True),
                                        MLTerm(model, types, True)]}
            else:  # both forms of the tabulated family: tabulated functions, and polynomials
                variants = {f"tabulated/{form}": [TabulatedTerms(tabulated, types, bonds, angles,
                                                                 dihedrals if tabulated.dihedrals else [], periodic=True,
                                                                 form=form)]
                            for form in TABULATED_FORMS}
            for label, terms in variants.items():
                mts_inner = data["inner"] if data["inner"] > 1 else MTS_INNER
                runs = [(inner, "default") for inner in (1, mts_inner)]
                if one_core and label == "tabulated/closed":  # the quick preset's model, on one pinned core
                    runs.append((mts_inner, "single_core"))
                for inner, threads in runs:
                    system = assemble_system(masses, box_nm=box, terms=terms)
                    dt = data["dt"] * inner  # the bonded forces always at the job's (inner) step
                    integrator = (openmm.LangevinMiddleIntegrator(450, 1.0, dt) if inner == 1
                                  else mts_langevin(system, 450.0, 1.0, dt, inner))
                    row = {"family": label, "beads": beads, "inner_steps": inner, "threads": threads}
                    try:
                        with single_core(threads == "single_core"):
                            per_step, blocks = time_steps(system, x, box, integrator, args.platform, args.budget)
                    except (RuntimeError, MemoryError, openmm.OpenMMException) as error:
                        results["cg"].append({**row, "error": str(error)[:200]})
                        continue
                    results["cg"].append({**row, "timestep_ps": dt, "seconds_per_step": per_step, "blocks": blocks,
                                          "ps_per_wall_second": dt / per_step})
    # ratios to the fine reference of the same melt (same chains: sites = beads × monomers per bead)
    # against the fine reference's faster thread configuration at that size
    fine_by_sites = {}
    for r in results["fine"]:
        if r["ps_per_wall_second"] > fine_by_sites.get(r["sites"], {"ps_per_wall_second": 0.0})["ps_per_wall_second"]:
            fine_by_sites[r["sites"]] = r
    for row in results["cg"]:
        families_mapping = families[row["family"].split("/")[0]]["mapping"]
        sites = row["beads"] * families_mapping.n_atoms // families_mapping.n_beads
        if "ps_per_wall_second" in row and sites in fine_by_sites:
            row["speedup_vs_fine"] = row["ps_per_wall_second"] / fine_by_sites[sites]["ps_per_wall_second"]
    for row in results["fine"]:
        print(f"fine  {row['sites']:>7} sites  {row['threads']:<11} {row['seconds_per_step'] * 1e3:9.3f} ms/step  "
              f"{row['ps_per_wall_second']:8.3f} ps/s")
    for row in results["cg"]:
        if "error" in row:
            print(f"{row['family']:17} {row['beads']:>7} beads  MTS {row['inner_steps']}: failed ({row['error'][:60]})")
            continue
        ratio = f"  {row['speedup_vs_fine']:7.1f}x fine" if "speedup_vs_fine" in row else ""
        print(f"{row['family']:17} {row['beads']:>7} beads  inner {row['inner_steps']}  {row['threads']:<11} "
              f"{row['seconds_per_step'] * 1e3:9.3f} ms/step  "
              f"{row['ps_per_wall_second']:8.2f} ps/s{ratio}")
    for row in results["network_profile"]:
        print(f"network call {row['beads']:>7} beads  {row['ms_per_call']:9.2f} ms ({row['threads']} threads)")
        for op in row.get("top", []):
            print(f"    {op['operator']:<40} {op['self_ms_per_call']:7.3f} ms  x{op['count_per_call']:.0f}  {100 * op['share']:4.1f} %")
        if "operators_per_call" in row:
            print(f"    {row['operators_per_call']:.0f} operators per call ({row['distinct_operators']} distinct), "
                  f"{row['profiled_ms_per_call']:.2f} ms of self time under the profiler")
    for row in results["kernel_costs"]:
        print(f"kernel {row['beads']:>7} beads  {row['term']:<10} {row['form']:<30} {row['ms_per_call']:9.3f} ms")
    atomic_write_json(args.out, results)
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def plot(results, path):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for threads, style in (("default", "k-o"), ("single_core", "k:o")):
        fine = [r for r in results["fine"] if r.get("threads", "default") == threads]
        if fine:
            ax.loglog([r["sites"] for r in fine], [r["seconds_per_step"] * 1e3 for r in fine], style,
                      label="fine TraPPE-UA (sites)" + (", one pinned core" if threads == "single_core" else ""))
    for family in sorted({r["family"] for r in results["cg"]}):
        for mts, threads, style in ((False, "default", "-s"), (True, "default", "--^"), (True, "single_core", ":v")):
            rows = [r for r in results["cg"] if r["family"] == family and (r["inner_steps"] > 1) == mts
                    and r.get("threads", "default") == threads and "seconds_per_step" in r]
            inner = rows[0]["inner_steps"] if rows else 1
            if rows:
                ax.loglog([r["beads"] for r in rows], [r["seconds_per_step"] * 1e3 for r in rows], style,
                          label=f"{family} (beads)" + (f", MTS ×{inner}" if inner > 1 else "")
                          + (", one pinned core" if threads == "single_core" else ""))
    ax.set_xlabel("particles")
    ax.set_ylabel("wall ms per step")
    ax.legend(fontsize=8)
    ax.set_title(f"cost per step ({results['platform']})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


if __name__ == "__main__":
    sys.exit(run_main(main))
