"""The CG validation report: a list of observables compared between the mapped reference and a CG
run, written as report.json, report.md and PNG plots (each atomically)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping as MappingABC, Optional, Sequence, Tuple, Union

import mdtraj as md
import numpy as np

from multiscale.atomic import atomic_write_bytes
from multiscale.cg.analysis.beads import Masses, _chain_indices, _key_str, _masses, bead_types, check_same_topology
from multiscale.cg.analysis.comparisons import polymer_observables
from multiscale.cg.analysis.observable import Observable, ReportContext
from multiscale.cg.analysis.text import _fmt


def _jsonable(value, where: str = "report"):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = _key_str(k) if isinstance(k, tuple) else str(k)
            out[key] = _jsonable(v, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{where} of type {type(value).__name__} is not JSON-serialisable; pass numbers, strings, "
                    "lists or dicts in extra")


def _table_heading(observables: Sequence[Observable]) -> str:
    titles = [o.title for o in observables]
    if len(titles) <= 2:
        return " and ".join(titles)
    return ", ".join(titles[:-1]) + " and " + titles[-1]


def _markdown(report: Dict[str, Any], observables: Sequence[Observable]) -> str:
    lines = ["# CG validation report", ""]
    meta = report["system"]
    lines += [f"{meta['n_beads']} beads in {meta['n_chains']} chains; bead types {', '.join(meta['bead_types'])}; "
              f"{meta['n_frames']['ref']} reference frames, {meta['n_frames']['cg']} CG frames. "
              "Uncertainties are standard errors of the mean from block averaging "
              f"({report['settings']['sem_blocks']} blocks; a bilayer's area and thickness take the larger of that "
              "and the autocorrelation estimate).", ""]
    if report.get("speedup") is not None:
        lines += [f"**Speed-up (CG vs reference): {_fmt(report['speedup'])}×**", ""]
    for observable in observables:
        lines += observable.markdown(report)
    tabled = [o for o in observables if type(o).table_rows is not Observable.table_rows]
    if tabled:
        heading = _table_heading(tabled)
        lines += [f"## {heading[:1].upper()}{heading[1:]}", "", "| quantity | reference | CG | CG vs ref (%) |",
                  "|---|---|---|---|"]
        for observable in tabled:
            lines += observable.table_rows(report)
        lines.append("")
    if report.get("extra"):
        lines += ["## Extra", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in report["extra"].items()]
        lines.append("")
    if report.get("files"):
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in report["files"] if name.endswith(".png")]
        lines.append("")
    return "\n".join(lines)


def validation_report(ref: md.Trajectory, cg: md.Trajectory, masses: Masses, *, out_dir, speedup=None,
                      extra: Optional[Dict[str, Any]] = None, types: Optional[Sequence[str]] = None,
                      bonded_bins=None, rdf_range: Optional[Tuple[float, float]] = None, rdf_bins: int = 100,
                      rdf_exclude: Union[str, int] = "intramolecular", sem_blocks: int = 10,
                      density_traj: Optional[md.Trajectory] = None,
                      observables: Optional[Sequence[Observable]] = None) -> Dict[str, Any]:
    """Compare a CG trajectory with the mapped reference and write ``out_dir``/report.json,
    report.md and PNG plots (each written atomically: temporary file + ``os.replace``).

    ``observables``: the :class:`~multiscale.cg.analysis.observable.Observable` list to compare,
    in report order; the default is :func:`~multiscale.cg.analysis.comparisons.polymer_observables`
    built from ``bonded_bins``, ``rdf_range`` (nm), ``rdf_bins``, ``rdf_exclude`` and
    ``density_traj`` (those keywords are refused together with ``observables``). A membrane job
    passes its own list (area per lipid, thickness, ...) next to or instead of these.

    ``masses``: one mass (amu) per bead or ``{type: amu}``. ``speedup``: optional positive number
    (dimensionless, e.g. CG ns/day ÷ reference ns/day; stored as given). ``extra``: optional
    JSON-serialisable dict stored under ``"extra"``. ``types`` (:func:`bead_types`) and
    ``sem_blocks`` (:func:`block_sem`) are shared by every observable. ``density_traj``: the CG
    trajectory the density is taken from, when it is not ``cg`` (same topology). A structural run
    at the reference density (NVT) says nothing about the CG model's own density; pass a
    constant-pressure (NPT) run of the same model here.

    Returns the report (the dict written to report.json; type tuples joined with ``-``), with
    ``system`` (sizes, types, frames, ``polymer_chains``: topology chains of ≥ 2 beads), then each
    observable's entries; with the default list:

    * ``bonded``: :func:`compare_bonded` (JSD per type and per kind, terms per frame);
    * ``rdf``: ``per_pair`` :func:`rdf_difference` of every type pair and ``settings``; or
      ``per_pair: None`` and a ``reason`` when a trajectory has no unit cell;
    * ``radius_of_gyration`` and ``end_to_end`` (nm), over the chains of ≥ 2 beads listed in
      ``system.polymer_chains`` (topology chain indices; ``None`` if there are none; per-chain
      lists follow that order):
      for ``ref`` and ``cg`` the ``mean`` over chains and frames with its block ``sem``, the
      ``root_mean_square``, ``per_chain_mean``/``per_chain_sem``; ``relative_difference_percent``
      = 100 (cg − ref)/ref of the means with its ``..._sem`` (SEMs propagated as independent), and
      per chain;
    * ``density`` (g/cm³): ``reference``/``cg`` means, ``reference_sem``/``cg_sem`` and the relative difference (``None`` without
      a unit cell), with ``cg_source`` ("cg" or "density_traj") and ``cg_frames``;

    and last ``speedup``, ``extra``, ``settings`` and ``files``. NaN values (e.g. an SEM from one
    frame) are written as null.
    """
    if observables is None:
        observables = polymer_observables(bonded_bins=bonded_bins, rdf_range=rdf_range, rdf_bins=rdf_bins,
                                          rdf_exclude=rdf_exclude, density_traj=density_traj)
    else:
        given = {"bonded_bins": bonded_bins, "rdf_range": rdf_range, "density_traj": density_traj}
        clash = sorted(k for k, v in given.items() if v is not None)
        if rdf_bins != 100 or rdf_exclude != "intramolecular":
            clash.append("rdf_bins/rdf_exclude")
        if clash:
            raise ValueError(f"{', '.join(clash)} configure the default observables; with observables=[...] "
                             "pass these settings to the observables themselves")
        observables = list(observables)
        for observable in observables:
            if not isinstance(observable, Observable):
                raise TypeError(f"observables must be Observable instances, got {type(observable).__name__}")
    check_same_topology(ref, cg)
    context = ReportContext(masses=masses, types=types, sem_blocks=sem_blocks)
    for observable in observables:
        observable.check(ref, cg, context)
    if ref.n_frames == 0 or cg.n_frames == 0:
        raise ValueError("both trajectories need at least one frame")
    if speedup is not None and not (isinstance(speedup, (int, float, np.number)) and math.isfinite(speedup)
                                    and speedup > 0):
        raise ValueError(f"speedup must be a positive number (CG rate / reference rate), got {speedup!r}")
    if extra is not None:
        if not isinstance(extra, MappingABC):
            raise TypeError(f"extra must be a dict of JSON-serialisable values, got {type(extra).__name__}")
        _jsonable(dict(extra), "extra")  # refuse unserialisable values before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = bead_types(ref.topology, types)
    _masses(ref.topology, masses, types)  # refuse bad masses before any work

    chains = [c for c, idx in enumerate(_chain_indices(ref.topology)) if idx.size >= 2]
    report: Dict[str, Any] = {
        "system": {"n_beads": ref.n_atoms, "n_chains": ref.topology.n_chains, "polymer_chains": chains,
                   "bead_types": sorted(set(names)), "n_frames": {"ref": ref.n_frames, "cg": cg.n_frames}},
    }
    settings: Dict[str, Any] = {}
    plots: Dict[str, bytes] = {}
    for observable in observables:
        comparison = observable.compare(ref, cg, context)
        clash = sorted(set(comparison.entries) & set(report))
        if clash:
            raise ValueError(f"{type(observable).__name__} writes report keys {clash} that another observable wrote")
        report.update(comparison.entries)
        settings.update(comparison.settings)
        plots.update({name: data for name, data in comparison.plots.items() if data is not None})
    report["speedup"] = None if speedup is None else float(speedup)
    report["extra"] = dict(extra) if extra is not None else None
    report["settings"] = {
        **settings,
        "sem_blocks": int(sem_blocks),
        "units": {"length": "nm", "angle": "rad", "density": "g/cm^3", "mass": "amu"},
    }
    report["files"] = ["report.json", "report.md", *plots]
    report = _jsonable(report)
    for name, data in plots.items():
        atomic_write_bytes(out / name, data)
    atomic_write_bytes(out / "report.md", _markdown(report, observables).encode("utf-8"))
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return report
