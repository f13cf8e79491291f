"""The observables of a lipid bilayer's validation report: area per lipid, thickness, density
profiles along the normal, tail order, tail phase (fluid or ordered at zero tension), in-plane
head RDF, stability (lipids lost) and lateral diffusion; :func:`membrane_observables` lists them
(with the bonded distributions) in report order. Each is an :class:`~multiscale.cg.analysis.observable.Observable`, so the polymer
observables stay untouched.

Ensembles: the reference is NPT at zero surface tension. The structural CG run (``cg``) is NVT at
the reference's area, so its area says nothing; the area per lipid and thickness the model
chooses come from a separate CG run at zero tension, ``npt_traj``. Lipids are topology chains;
``head_type`` names the bead type whose planes define the thickness (the phosphate, "PO").
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.area_per_lipid import area_per_lipid
from multiscale.cg.analysis.beads import bead_types, check_same_topology
from multiscale.cg.analysis.bilayer import check_membrane_cell, lipid_head_beads
from multiscale.cg.analysis.comparisons import BondedComparison
from multiscale.cg.analysis.density_profile import density_profile
from multiscale.cg.analysis.lateral_diffusion import lateral_diffusion_coefficient
from multiscale.cg.analysis.lateral_rdf import lateral_rdf
from multiscale.cg.analysis.leaflet_exchange import lipids_leaving_leaflet
from multiscale.cg.analysis.observable import Comparison, Observable, ReportContext
from multiscale.cg.analysis.order_parameter import bond_order_parameter
from multiscale.cg.analysis.plots import _figure, _png
from multiscale.cg.analysis.rdf import rdf_difference
from multiscale.cg.analysis.statistics import _relative, correlated_sem
from multiscale.cg.analysis.text import _fmt


def _stats(ref_series: np.ndarray, cg_series: np.ndarray, blocks: int) -> Dict[str, Any]:
    ref = {"mean": float(np.mean(ref_series)), "sem": correlated_sem(ref_series, blocks)}
    cg = {"mean": float(np.mean(cg_series)), "sem": correlated_sem(cg_series, blocks)}
    rel, rel_sem = _relative(ref["mean"], cg["mean"], ref["sem"], cg["sem"])
    return {"reference": ref["mean"], "cg": cg["mean"], "reference_sem": ref["sem"], "cg_sem": cg["sem"],
            "relative_difference_percent": rel, "relative_difference_percent_sem": rel_sem}


def _row(label: str, block: Optional[Dict[str, Any]]) -> List[str]:
    if block is None:
        return []
    return [f"| {label} | {_fmt(block['reference'])} ± {_fmt(block['reference_sem'], 2)} | {_fmt(block['cg'])} ± "
            f"{_fmt(block['cg_sem'], 2)} | {_fmt(block['relative_difference_percent'], 3)} ± "
            f"{_fmt(block['relative_difference_percent_sem'], 2)} |"]


class _NPTObservable(Observable):
    def __init__(self, npt_traj: Optional[md.Trajectory] = None):
        self.npt_traj = npt_traj

    def check(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> None:
        check_membrane_cell(ref, f"{self.title} (reference)")
        check_membrane_cell(cg, f"{self.title} (CG)")
        if self.npt_traj is not None:
            check_same_topology(ref, self.npt_traj)
            check_membrane_cell(self.npt_traj, f"{self.title} (CG NPT)")

    @property
    def source(self) -> str:
        return "cg" if self.npt_traj is None else "npt_traj"


class AreaPerLipidComparison(_NPTObservable):
    """Area per lipid (nm²): reference (NPT, zero tension) against the CG run at zero tension
    (``npt_traj``; the structural run when None). Report key ``area_per_lipid``: ``reference``,
    ``cg`` with block SEMs and the relative difference (%)."""

    title = "area per lipid"

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        source = cg if self.npt_traj is None else self.npt_traj
        block = _stats(area_per_lipid(ref), area_per_lipid(source), context.sem_blocks)
        block.update({"cg_source": self.source, "cg_frames": int(source.n_frames), "unit": "nm^2"})
        return Comparison(entries={"area_per_lipid": block})

    def table_rows(self, report: Dict[str, Any]) -> List[str]:
        return _row("area per lipid (nm²)", report.get("area_per_lipid"))


class ThicknessComparison(_NPTObservable):
    """Bilayer thickness (nm), the distance between the two leaflets' ``head_type`` planes:
    reference against the CG run at zero tension (``npt_traj``, else the structural run), with the
    structural (NVT) run's value as ``cg_nvt``. Report key ``thickness``."""

    title = "thickness"

    def __init__(self, head_type: str = "PO", npt_traj: Optional[md.Trajectory] = None):
        super().__init__(npt_traj)
        self.head_type = head_type

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        from multiscale.cg.analysis.thickness import bilayer_thickness

        names = bead_types(ref.topology, context.types)
        _, heads = lipid_head_beads(ref.topology, names, self.head_type)
        source = cg if self.npt_traj is None else self.npt_traj
        reference = bilayer_thickness(ref, heads)
        # a CG run whose bilayer fell apart is reported as such (stability counts its lost lipids)
        runs = {"cg": bilayer_thickness(source, heads, not_a_bilayer="nan"),
                "cg_nvt": bilayer_thickness(cg, heads, not_a_bilayer="nan")}
        broken = {name: int(np.isnan(values).sum()) for name, values in runs.items()}
        if broken["cg"]:
            block = {"reference": float(reference.mean()), "reference_sem": correlated_sem(reference, context.sem_blocks),
                     "cg": None, "cg_sem": None, "relative_difference_percent": None,
                     "relative_difference_percent_sem": None}
        else:
            block = _stats(reference, runs["cg"], context.sem_blocks)
        nvt = runs["cg_nvt"]
        block.update({"cg_nvt": None if broken["cg_nvt"] else float(nvt.mean()),
                      "cg_nvt_sem": None if broken["cg_nvt"] else correlated_sem(nvt, context.sem_blocks),
                      "not_a_bilayer_frames": {"cg": broken["cg"], "cg_nvt": broken["cg_nvt"]},
                      "cg_source": self.source, "head_type": self.head_type, "unit": "nm"})
        return Comparison(entries={"thickness": block})

    def table_rows(self, report: Dict[str, Any]) -> List[str]:
        block = report.get("thickness")
        label = f"thickness, {block['head_type']}–{block['head_type']} (nm)" if block else ""
        if block is not None and block["cg"] is None:
            return [f"| {label} | {_fmt(block['reference'])} ± {_fmt(block['reference_sem'], 2)} | not a bilayer in "
                    f"{block['not_a_bilayer_frames']['cg']} frames | — |"]
        return _row(label, block)


class DensityProfileComparison(Observable):
    """Number density (beads/nm³) along the normal per bead type, reference against the
    structural CG run (same area). Report key ``density_profiles``: per type ``abs_integral_ratio``
    and ``rms`` (:func:`~multiscale.cg.analysis.rdf.rdf_difference` on the profiles); plot
    ``density_profiles.png``."""

    title = "Density profiles"

    def __init__(self, half_width_nm: float = 3.5, bins: int = 70):
        self.half_width_nm, self.bins = half_width_nm, bins

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        names = np.array(bead_types(ref.topology, context.types))
        curves, entries = {}, {}
        for kind in sorted(set(names)):
            idx = np.flatnonzero(names == kind)
            z, p_ref = density_profile(ref, idx, half_width_nm=self.half_width_nm, bins=self.bins)
            _, p_cg = density_profile(cg, idx, half_width_nm=self.half_width_nm, bins=self.bins)
            curves[kind] = (z, p_ref, p_cg)
            entries[kind] = rdf_difference(z, p_ref, p_cg)
        fig, axes = _figure(len(curves))
        for ax, (kind, (z, a, b)) in zip(axes, curves.items()):
            ax.plot(z, a, color="k", label="reference")
            ax.plot(z, b, color="tab:red", label="CG")
            ax.set_title(kind, fontsize=9)
            ax.set_xlabel("height above the mid-plane (nm)")
            ax.set_ylabel("beads / nm³")
        axes[0].legend(fontsize=8)
        return Comparison(entries={"density_profiles": {"per_type": entries, "half_width_nm": self.half_width_nm,
                                                        "bins": int(self.bins)}},
                          plots={"density_profiles.png": _png(fig)})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        lines = ["## Density profiles along the normal (beads/nm³; density_profiles.png)", "",
                 "| bead type | ∫\\|p_cg − p_ref\\| / ∫ p_ref | RMS |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['abs_integral_ratio'])} | {_fmt(v['rms'])} |"
                  for k, v in report["density_profiles"]["per_type"].items()]
        return lines + [""]


class TailOrderComparison(Observable):
    """P₂ order parameter of every bead–bead bond against the normal, averaged per bond name pair
    (e.g. ``C2A-C2B``; names are the topology's bead names, the same in every lipid). Report key
    ``tail_order``: per bond ``reference``, ``cg`` and ``difference``; ``max_abs_difference``."""

    title = "Tail order"

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        atoms = list(ref.topology.atoms)
        bonds = np.array([(a.index, b.index) for a, b in ref.topology.bonds], dtype=np.int64).reshape(-1, 2)
        keys = [f"{atoms[i].name}-{atoms[j].name}" for i, j in bonds]
        p_ref, p_cg = bond_order_parameter(ref, bonds), bond_order_parameter(cg, bonds)
        per_bond = {}
        for key in dict.fromkeys(keys):
            sel = np.array([k == key for k in keys])
            a, b = float(p_ref[sel].mean()), float(p_cg[sel].mean())
            per_bond[key] = {"reference": a, "cg": b, "difference": b - a}
        worst = max((abs(v["difference"]) for v in per_bond.values()), default=float("nan"))
        fig, axes = _figure(1)
        x = np.arange(len(per_bond))
        axes[0].plot(x, [v["reference"] for v in per_bond.values()], "o-", color="k", label="reference")
        axes[0].plot(x, [v["cg"] for v in per_bond.values()], "s--", color="tab:red", label="CG")
        axes[0].set_xticks(x, list(per_bond), rotation=60, fontsize=7)
        axes[0].set_ylabel("P₂ of the bond against z")
        axes[0].legend(fontsize=8)
        return Comparison(entries={"tail_order": {"per_bond": per_bond, "max_abs_difference": worst}},
                          plots={"tail_order.png": _png(fig)})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        lines = ["## Bond order P₂ against the normal", "", "| bond | reference | CG | CG − ref |", "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['reference'], 3)} | {_fmt(v['cg'], 3)} | {_fmt(v['difference'], 2)} |"
                  for k, v in report["tail_order"]["per_bond"].items()]
        return lines + [""]


#: a CG bilayer at zero tension whose tails' mean P₂ exceeds the reference's by more than this is
#: reported as ordered (gel-like) instead of fluid. Measured on the DMPC quick patch (fluid
#: all-atom reference: 0.47): fluid CG runs 0.45–0.62; a seed whose pair-refined model froze at
#: zero tension 0.70–0.79 while its area fell 11–13 %, and 0.84–0.91 once fully ordered
ORDERED_P2_EXCESS = 0.2


class TailPhaseComparison(_NPTObservable):
    """Whether the CG bilayer at zero tension stayed fluid: the mean P₂ of the tail–tail bonds
    (both beads of a ``tail_types`` type) in the reference, the structural CG run (at the
    reference's area) and the CG run at zero tension (``npt_traj``), that run's two halves
    apart (a rising order is a freezing bilayer), and ``ordered``: its second half's P₂ above the
    reference's by more than :data:`ORDERED_P2_EXCESS`. A solvent-free CG model can have an
    ordered phase that the structural run at the reference's area never shows: at zero tension
    the bilayer then contracts and its tails straighten, which the area alone does not tell
    from a soft fluid. Report key ``tail_phase`` (``ordered`` None without ``npt_traj``)."""

    title = "Tail phase"

    def __init__(self, tail_types=("C", "CT"), npt_traj: Optional[md.Trajectory] = None):
        super().__init__(npt_traj)
        self.tail_types = tuple(tail_types)

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        names = bead_types(ref.topology, context.types)
        bonds = np.array([(a.index, b.index) for a, b in ref.topology.bonds
                          if names[a.index] in self.tail_types and names[b.index] in self.tail_types],
                         dtype=np.int64).reshape(-1, 2)
        if len(bonds) == 0:
            raise ValueError(f"no bond joins two beads of the tail types {list(self.tail_types)}; the topology's bead "
                             f"types are {sorted(set(names))}: pass tail_types")

        def p2(traj: md.Trajectory) -> float:
            return float(bond_order_parameter(traj, bonds).mean())

        block: Dict[str, Any] = {"reference": p2(ref), "cg": p2(cg), "cg_npt": None, "cg_npt_halves": None,
                                 "ordered": None, "threshold": ORDERED_P2_EXCESS, "tail_types": list(self.tail_types),
                                 "n_bonds": int(len(bonds))}
        if self.npt_traj is not None:
            half = self.npt_traj.n_frames // 2
            halves = [p2(self.npt_traj[:half]), p2(self.npt_traj[half:])] if half > 0 else [p2(self.npt_traj)] * 2
            block.update({"cg_npt": p2(self.npt_traj), "cg_npt_halves": halves,
                          "ordered": bool(halves[1] - block["reference"] > ORDERED_P2_EXCESS)})
        return Comparison(entries={"tail_phase": block})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        block = report["tail_phase"]
        lines = ["## Tail phase (mean P₂ of the tail bonds)", "",
                 f"reference {_fmt(block['reference'], 3)}, CG at the reference's area {_fmt(block['cg'], 3)}"]
        if block["cg_npt"] is not None:
            first, second = block["cg_npt_halves"]
            verdict = ("**ordered (gel-like)**: its area and thickness are not the fluid bilayer's" if block["ordered"]
                       else "fluid")
            lines[-1] += (f", CG at zero tension {_fmt(block['cg_npt'], 3)} (halves {_fmt(first, 3)} → "
                          f"{_fmt(second, 3)}): {verdict} (ordered above reference + {block['threshold']:g})")
        return lines + [""]


class LateralRDFComparison(Observable):
    """In-plane RDF of the ``head_type`` beads within each leaflet. Report key ``lateral_rdf``
    (:func:`~multiscale.cg.analysis.rdf.rdf_difference` of the curves); plot ``lateral_rdf.png``."""

    title = "In-plane head RDF"

    def __init__(self, head_type: str = "PO", r_max_nm: Optional[float] = None, bins: int = 60):
        self.head_type, self.r_max_nm, self.bins = head_type, r_max_nm, bins

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        names = bead_types(ref.topology, context.types)
        _, heads = lipid_head_beads(ref.topology, names, self.head_type)
        widths = np.concatenate([np.asarray(t.unitcell_vectors[:, i, i]) for t in (ref, cg) for i in (0, 1)])
        r_max = self.r_max_nm if self.r_max_nm is not None else min(1.5, 0.49 * float(widths.min()))
        r, g_ref = lateral_rdf(ref, heads, r_max_nm=r_max, bins=self.bins)
        _, g_cg = lateral_rdf(cg, heads, r_max_nm=r_max, bins=self.bins)
        fig, axes = _figure(1)
        axes[0].plot(r, g_ref, color="k", label="reference")
        axes[0].plot(r, g_cg, color="tab:red", label="CG")
        axes[0].axhline(1.0, color="0.7", lw=0.8)
        axes[0].set_xlabel("in-plane r (nm)")
        axes[0].set_ylabel(f"g(r) of {self.head_type} beads, same leaflet")
        axes[0].legend(fontsize=8)
        return Comparison(entries={"lateral_rdf": {**rdf_difference(r, g_ref, g_cg), "head_type": self.head_type,
                                                   "r_max_nm": r_max, "bins": int(self.bins)}},
                          plots={"lateral_rdf.png": _png(fig)})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        block = report["lateral_rdf"]
        return [f"## In-plane RDF of {block['head_type']} beads (lateral_rdf.png)", "",
                f"∫|g_cg − g_ref| / ∫ g_ref = {_fmt(block['abs_integral_ratio'])}, RMS {_fmt(block['rms'])}", ""]


class StabilityComparison(_NPTObservable):
    """Lipids that leave their leaflet or the bilayer
    (:func:`~multiscale.cg.analysis.leaflet_exchange.lipids_leaving_leaflet`) in the reference,
    the structural CG run and the CG run at zero tension. Report key ``stability``; ``lost`` of
    each CG run should be 0."""

    title = "Stability"

    def __init__(self, head_type: str = "PO", npt_traj: Optional[md.Trajectory] = None):
        super().__init__(npt_traj)
        self.head_type = head_type

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        names = bead_types(ref.topology, context.types)
        lipids, heads = lipid_head_beads(ref.topology, names, self.head_type)
        block = {"reference": lipids_leaving_leaflet(ref, heads, lipids), "cg": lipids_leaving_leaflet(cg, heads, lipids),
                 "cg_npt": None if self.npt_traj is None else lipids_leaving_leaflet(self.npt_traj, heads, lipids),
                 "n_lipids": len(lipids)}
        return Comparison(entries={"stability": block})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        block = report["stability"]
        lines = [f"## Stability ({block['n_lipids']} lipids)", "", "| run | flip-flop | escaped | lost |", "|---|---|---|---|"]
        for run in ("reference", "cg", "cg_npt"):
            if block.get(run) is not None:
                lines.append(f"| {run} | {block[run]['flip_flop']} | {block[run]['escaped']} | {block[run]['lost']} |")
        return lines + [""]


class LateralDiffusionComparison(Observable):
    """Lateral diffusion coefficient of the lipids (nm²/ps), reference against the structural CG
    run, and their ratio (the dynamical acceleration, apart from the speed-up). The frame
    intervals (ps) of both trajectories are needed. Report key ``lateral_diffusion``."""

    title = "Lateral diffusion"

    def __init__(self, reference_frame_ps: float, cg_frame_ps: float):
        if not (reference_frame_ps > 0 and cg_frame_ps > 0):
            raise ValueError("the frame intervals must be > 0 ps")
        self.reference_frame_ps, self.cg_frame_ps = reference_frame_ps, cg_frame_ps

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        d_ref = lateral_diffusion_coefficient(ref, context.masses, frame_interval_ps=self.reference_frame_ps,
                                              types=context.types)
        d_cg = lateral_diffusion_coefficient(cg, context.masses, frame_interval_ps=self.cg_frame_ps, types=context.types)
        return Comparison(entries={"lateral_diffusion": {
            "reference": d_ref, "cg": d_cg, "acceleration": d_cg / d_ref if d_ref > 0 else None, "unit": "nm^2/ps",
            "what": "lipid centre-of-mass in-plane D, each leaflet's drift removed"}})

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        block = report["lateral_diffusion"]
        return ["## Lateral diffusion (apart from the speed-up)", "",
                f"reference {_fmt(block['reference'], 3)} nm²/ps, CG {_fmt(block['cg'], 3)} nm²/ps, "
                f"dynamical acceleration {_fmt(block['acceleration'], 3)}×", ""]


def membrane_observables(*, head_type: str = "PO", npt_traj: Optional[md.Trajectory] = None, bonded_bins=None,
                         reference_frame_ps: Optional[float] = None, cg_frame_ps: Optional[float] = None,
                         profile_half_width_nm: float = 3.5, tail_types=("C", "CT")) -> List[Observable]:
    """The observables of a bilayer's report, in report order: area per lipid, thickness, density
    profiles, bonded distributions, tail order, tail phase (``tail_types``: the tail beads' types),
    in-plane head RDF, stability and (when both frame intervals are given) lateral diffusion."""
    observables: List[Observable] = [
        AreaPerLipidComparison(npt_traj), ThicknessComparison(head_type, npt_traj),
        DensityProfileComparison(profile_half_width_nm), BondedComparison(bonded_bins), TailOrderComparison(),
        TailPhaseComparison(tail_types, npt_traj), LateralRDFComparison(head_type), StabilityComparison(head_type, npt_traj)]
    if reference_frame_ps is not None and cg_frame_ps is not None:
        observables.append(LateralDiffusionComparison(reference_frame_ps, cg_frame_ps))
    return observables
