"""The standard observables of the CG validation report: bonded distributions, RDFs, chain sizes
(radius of gyration, end-to-end distance), chain pairs (1-4, 1-5, 1-6 distances) and density. :func:`polymer_observables` lists them in
report order; each is an :class:`~multiscale.cg.analysis.observable.Observable`."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import _chain_indices, check_same_topology
from multiscale.cg.analysis.bonded import BONDED_KINDS, _bins_for, _compare_bonded_values, bonded_values
from multiscale.cg.analysis.chain_pairs import chain_pair_values
from multiscale.cg.analysis.density import density
from multiscale.cg.analysis.divergence import jensen_shannon
from multiscale.cg.analysis.end_to_end import end_to_end_distance
from multiscale.cg.analysis.observable import Comparison, Observable, ReportContext
from multiscale.cg.analysis.plots import _plot_bonded, _plot_chains, _plot_rdfs
from multiscale.cg.analysis.radius_of_gyration import radius_of_gyration_per_chain
from multiscale.cg.analysis.rdf import _rdf_set, rdf_difference
from multiscale.cg.analysis.statistics import _compare_series, _relative, block_sem
from multiscale.cg.analysis.text import _fmt, _pm


def _pooled_jsd(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """Jensen–Shannon divergence of two samples' histograms on ``bins`` bins spanning both."""
    pooled = np.concatenate([np.ravel(a), np.ravel(b)])
    edges = np.linspace(pooled.min(), pooled.max(), bins + 1)
    return jensen_shannon(np.histogram(a, edges)[0], np.histogram(b, edges)[0])


def _relative_cell(block: Dict[str, Any]) -> str:
    return f"{_fmt(block['relative_difference_percent'], 3)} ± {_fmt(block['relative_difference_percent_sem'], 2)}"


class BondedComparison(Observable):
    """Jensen–Shannon divergences of the bond, angle and dihedral distributions per type tuple
    (:func:`~multiscale.cg.analysis.bonded.compare_bonded`); ``bins`` as there. Report key
    ``bonded``; plots ``bonded_{bond,angle,dihedral}.png``."""

    title = "Bonded distributions"

    def __init__(self, bins=None):
        self.bins = bins

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        bonded, histograms = _compare_bonded_values(bonded_values(ref, types=context.types),
                                                    bonded_values(cg, types=context.types), ref.n_frames, self.bins)
        bins_used = {k: _bins_for(k, self.bins) for k in BONDED_KINDS}
        return Comparison(
            entries={"bonded": bonded},
            settings={"bonded_bins": {k: int(v) if np.ndim(v) == 0 else "edges given" for k, v in bins_used.items()}},
            plots={f"bonded_{kind}.png": _plot_bonded(kind, histograms[kind], bonded["n_terms"][kind])
                   for kind in BONDED_KINDS},
        )

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        lines = ["## Bonded distributions (Jensen–Shannon divergence, base 2: 0 identical, 1 disjoint)", "",
                 "| kind | types | terms/frame | JSD | reference half against half |", "|---|---|---|---|---|"]
        halves = report["bonded"].get("reference_halves", {})
        for kind in BONDED_KINDS:
            for key, value in report["bonded"]["per_type"][kind].items():
                floor = halves.get(kind, {}).get(key)
                lines.append(f"| {kind} | {key} | {report['bonded']['n_terms'][kind][key]} | {_fmt(value)} | "
                             f"{'—' if floor is None else _fmt(floor)} |")
        lines += ["", "| kind | mean JSD |", "|---|---|"]
        lines += [f"| {kind} | {_fmt(v)} |" for kind, v in report["bonded"]["per_kind"].items()]
        lines.append("")
        return lines


class RDFComparison(Observable):
    """How far the CG radial distribution functions of every bead-type pair are from the
    reference (:func:`~multiscale.cg.analysis.rdf.rdf_difference`); ``r_range`` (nm), ``bins`` and
    ``exclude`` as in :func:`~multiscale.cg.analysis.rdf.rdf`. Report key ``rdf``; plot ``rdf.png``.
    Without a unit cell the entry says why it was not computed."""

    title = "Radial distribution functions"

    def __init__(self, r_range: Optional[Tuple[float, float]] = None, bins: int = 100,
                 exclude: Union[str, int] = "intramolecular"):
        self.r_range, self.bins, self.exclude = r_range, bins, exclude

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        if ref.unitcell_vectors is None or cg.unitcell_vectors is None:
            return Comparison(entries={"rdf": {"per_pair": None,
                                               "reason": "a trajectory has no unit cell (RDFs need a periodic box)"}})
        curves, used_range = _rdf_set(ref, cg, None, self.r_range, self.bins, self.exclude, context.types)
        block = {"per_pair": {k: rdf_difference(*v) for k, v in curves.items()},
                 "settings": {"r_range_nm": list(used_range), "bins": int(self.bins), "exclude": self.exclude,
                              "normalisation": "per counted pair: g -> 1 at large r for uncorrelated beads"}}
        return Comparison(entries={"rdf": block}, plots={"rdf.png": _plot_rdfs(curves)})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        rdfs = report["rdf"]
        lines = ["## Radial distribution functions", ""]
        if rdfs.get("per_pair") is None:
            return lines + [f"not computed: {rdfs.get('reason')}", ""]
        s = rdfs["settings"]
        lines += [f"r range {_fmt(s['r_range_nm'][0])}–{_fmt(s['r_range_nm'][1])} nm, {s['bins']} bins, "
                  f"excluded pairs: {s['exclude']}.", "",
                  "| pair | ∫\\|g_cg − g_ref\\| dr / ∫ g_ref dr | RMS(g_cg − g_ref) |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['abs_integral_ratio'])} | {_fmt(v['rms'])} |" for k, v in rdfs["per_pair"].items()]
        lines.append("")
        return lines


class ChainSizeComparison(Observable):
    """Radius of gyration and end-to-end distance (nm) of the chains of ≥ 2 beads (the topology
    chains listed in the report's ``system.polymer_chains``), with block SEMs and relative
    differences, and the Jensen–Shannon divergence of their distributions (``jsd``: a mean can be
    right while the shape is wrong, e.g. a missing compact population). ``jsd_reference_halves``
    is the same divergence between the reference's first and second halves: the sampling-noise
    floor of ``jsd`` (slow chain conformations make a short reference disagree with itself; a CG
    run below it cannot be told apart from the reference). Report keys ``radius_of_gyration`` and
    ``end_to_end`` (None without such chains); plot ``chains.png``."""

    title = "Chains"
    #: histogram bins of the per-chain values for the ``jsd``
    DISTRIBUTION_BINS = 40

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        chains = [c for c, idx in enumerate(_chain_indices(ref.topology)) if idx.size >= 2]
        if not chains:
            return Comparison(entries={"radius_of_gyration": None, "end_to_end": None}, plots={"chains.png": None})
        rg = (radius_of_gyration_per_chain(ref, context.masses, types=context.types)[:, chains],
              radius_of_gyration_per_chain(cg, context.masses, types=context.types)[:, chains])
        ee = (end_to_end_distance(ref)[:, chains], end_to_end_distance(cg)[:, chains])
        return Comparison(
            entries={"radius_of_gyration": {**_compare_series(*rg, context.sem_blocks), **self._divergences(*rg)},
                     "end_to_end": {**_compare_series(*ee, context.sem_blocks), **self._divergences(*ee)}},
            plots={"chains.png": _plot_chains({"radius of gyration": rg, "end-to-end distance": ee})},
        )

    def _divergences(self, ref_values: np.ndarray, cg_values: np.ndarray) -> Dict[str, Any]:
        """``jsd`` (reference against CG) and ``jsd_reference_halves`` (the reference's frames
        split in time; None for a one-frame reference)."""
        half = len(ref_values) // 2
        floor = self._jsd(ref_values[:half], ref_values[half:]) if half else None
        return {"jsd": self._jsd(ref_values, cg_values), "jsd_reference_halves": floor}

    def _jsd(self, ref_values: np.ndarray, cg_values: np.ndarray) -> float:
        return _pooled_jsd(ref_values, cg_values, self.DISTRIBUTION_BINS)

    def table_rows(self, report: Dict[str, Any]) -> List[str]:
        rows = []
        for key, label in (("radius_of_gyration", "Rg (nm)"), ("end_to_end", "end-to-end distance (nm)")):
            block = report.get(key)
            if block is not None:
                shape = f" (distribution JSD {block['jsd']:.3f}" if "jsd" in block else ""
                if shape and block.get("jsd_reference_halves") is not None:
                    shape += f"; reference half against half {block['jsd_reference_halves']:.3f}"
                shape += ")" if shape else ""
                rows.append(f"| {label} | {_pm(block['ref'])} | {_pm(block['cg'])} | {_relative_cell(block)}{shape} |")
        return rows


class ChainPairComparison(Observable):
    """The distances of bead pairs s bonds apart within a chain (``separations``; default the
    1-4, 1-5 and 1-6 pairs, :func:`~multiscale.cg.analysis.chain_pairs.chain_pair_values`), per
    (s, type pair): reference and CG means, their relative difference, the Jensen–Shannon
    divergence of the distributions (``DISTRIBUTION_BINS`` bins spanning both) and the same
    between the reference's halves (its noise floor). Beyond the bond, angle and torsion
    distributions these set a chain's size and shape. Report key ``chain_pairs`` (keyed
    ``"1-6 E-E"``; None without such pairs)."""

    title = "Chain pairs"
    DISTRIBUTION_BINS = 40

    def __init__(self, separations=(3, 4, 5)):
        self.separations = tuple(int(s) for s in separations)

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        values_ref = chain_pair_values(ref, self.separations, types=context.types)
        if not values_ref:
            return Comparison(entries={"chain_pairs": None})
        values_cg = chain_pair_values(cg, self.separations, types=context.types)
        half = ref.n_frames // 2
        first = chain_pair_values(ref[:half], self.separations, types=context.types) if half else {}
        second = chain_pair_values(ref[half:], self.separations, types=context.types) if half else {}
        out = {}
        for key, r in values_ref.items():
            c = values_cg.get(key)
            if c is None or c.size == 0:
                continue
            name = f"1-{key[0] + 1} {key[1]}-{key[2]}"
            floor = self._jsd(first[key], second[key]) if key in first and key in second else None
            out[name] = {"ref_mean": float(r.mean()), "cg_mean": float(c.mean()),
                         "relative_difference_percent": _relative(float(r.mean()), float(c.mean()))[0],
                         "jsd": self._jsd(r, c), "jsd_reference_halves": floor}
        return Comparison(entries={"chain_pairs": out or None}, settings={"chain_pair_separations": list(self.separations)})

    def _jsd(self, a: np.ndarray, b: np.ndarray) -> float:
        return _pooled_jsd(a, b, self.DISTRIBUTION_BINS)

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        block = report.get("chain_pairs")
        if not block:
            return []
        lines = ["## Chain pairs (distances of beads s bonds apart within a chain, nm)", "",
                 "| pair | reference mean | CG mean | difference | JSD | reference half against half |",
                 "|---|---|---|---|---|---|"]
        for name, v in block.items():
            floor = v["jsd_reference_halves"]
            lines.append(f"| {name} | {_fmt(v['ref_mean'])} | {_fmt(v['cg_mean'])} | {_fmt(v['relative_difference_percent'], 2)} % | "
                         f"{_fmt(v['jsd'], 2)} | {'—' if floor is None else _fmt(floor, 2)} |")
        lines.append("")
        return lines


class DensityComparison(Observable):
    """Mass density (g/cm³) of the reference and the CG run, with block SEMs. ``density_traj``:
    the CG trajectory the density is taken from, when it is not the structural one (same
    topology): a constant-volume run says nothing about the model's own density, so pass a
    constant-pressure run of the same model. Report key ``density`` (None without a unit cell):
    ``reference`` and ``cg`` means (g/cm³) with their block SEMs ``reference_sem``/``cg_sem``."""

    title = "density"

    def __init__(self, density_traj: Optional[md.Trajectory] = None):
        self.density_traj = density_traj

    def check(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> None:
        if self.density_traj is not None:
            check_same_topology(ref, self.density_traj)
            if self.density_traj.n_frames == 0:
                raise ValueError("density_traj needs at least one frame")

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        source = cg if self.density_traj is None else self.density_traj
        periodic = ref.unitcell_vectors is not None and cg.unitcell_vectors is not None
        if not (periodic and source.unitcell_vectors is not None):
            return Comparison(entries={"density": None})
        d_ref = density(ref, context.masses, types=context.types)
        d_cg = density(source, context.masses, types=context.types)
        stats_ref = {"mean": float(d_ref.mean()), "sem": block_sem(d_ref, context.sem_blocks)}
        stats_cg = {"mean": float(d_cg.mean()), "sem": block_sem(d_cg, context.sem_blocks)}
        rel, rel_sem = _relative(stats_ref["mean"], stats_cg["mean"], stats_ref["sem"], stats_cg["sem"])
        return Comparison(entries={"density": {
            "reference": stats_ref["mean"], "cg": stats_cg["mean"],
            "reference_sem": stats_ref["sem"], "cg_sem": stats_cg["sem"], "relative_difference_percent": rel,
            "relative_difference_percent_sem": rel_sem,
            "cg_source": "cg" if self.density_traj is None else "density_traj",
            "cg_frames": int(source.n_frames)}})

    def table_rows(self, report: Dict[str, Any]) -> List[str]:
        dens = report.get("density")
        if dens is None:
            return []
        source = " (CG from a separate NPT run)" if dens.get("cg_source") == "density_traj" else ""
        ref = {"mean": dens["reference"], "sem": dens["reference_sem"]}
        cg = {"mean": dens["cg"], "sem": dens["cg_sem"]}
        return [f"| density (g/cm³){source} | {_pm(ref)} | {_pm(cg)} | {_relative_cell(dens)} |"]


def polymer_observables(*, bonded_bins=None, rdf_range: Optional[Tuple[float, float]] = None, rdf_bins: int = 100,
                        rdf_exclude: Union[str, int] = "intramolecular",
                        density_traj: Optional[md.Trajectory] = None) -> List[Observable]:
    """The observables of a polymer melt's report, in report order: bonded distributions, RDFs,
    chain sizes, chain pairs (1-4, 1-5, 1-6 distances) and density."""
    return [BondedComparison(bonded_bins), RDFComparison(rdf_range, rdf_bins, rdf_exclude),
            ChainSizeComparison(), ChainPairComparison(), DensityComparison(density_traj)]
