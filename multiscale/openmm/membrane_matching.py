"""Area and thickness matching of a solvent-free CG bilayer: the model's area term (the default
in ``membrane_cg.py``; below) or intermolecular pair ramps, set by feedback during one run at zero
external tension, so that the bilayer's area, and with the head–tail ramp its
phosphate-to-phosphate thickness (both on in ``membrane_cg.py``), are the reference's.

Why a solvent-free force-matched bilayer needs it: its pair tables are fitted to mapped forces
that are mostly noise (the water's kicks: ~97 % of the mean-square force in the DMPC quick run),
and the water's push on the head groups, a one-body effect, has no pairwise form. The fitted
model comes out thinner (−4 to −10 %), and its area at zero tension, which the lateral virial
constraint fixes only through the pressure at the reference configurations, wanders by ±15 %
from fit to fit: the CG bilayer is soft in area (an all-pair ramp of 1.4 kJ/mol moved it by 40 %).
Two knobs, each an intermolecular ramp U += A (1 − r/r_c) (between lipids only, so that each
lipid's own bonded distributions stay as refined):

1. **head–tail repulsion** ``A_ht`` on the head (NC, PO) – tail (C, CT) pairs, the pairwise
   stand-in for the hydrophobic effect that keeps heads out of the core (the Cooke–Kremer–Deserno
   lipids are built this way): the thickness;
2. **all pairs** ``A_all``: the area at zero tension (``MonteCarloMembraneBarostat``, box height
   fixed).

Both are set together by :func:`control_membrane` (one PI controller each,
:mod:`~multiscale.openmm.ramp_control`) in one run with the barostat on: the thickness and the
area relax over ~100 ps after a ramp changes, longer than separate trials can afford, and each
ramp moves both values (set one after the other, a seed on target in thickness after its own
controller ended 9 % thick once the all-pair ramp had been matched). The area is controlled
directly: an earlier version matched the lateral pressure (molecular virial) at the reference's
area instead, and this bilayer is so soft in area that the pressure's statistical error of tens
of bar is several % of area (one run: 9 bar against a target of 1, then +4 % area). The
bonded tables may be refined during the same run (``revise``), since the ramps change what each
lipid's head group sees and the bonded tables change the thickness and area in turn.

With the pair tables refined by iterative Boltzmann inversion first
(:func:`~multiscale.cg.tabulated.refine_pairs`), the packing is near the reference's:
``thickness=False`` runs the area channel alone (the head–tail ramp held at 0, the thickness
observed). With the all-pair ramp for the area, both channels on after the inversion fought in
two of three DMPC quick runs: the head–tail ramp thickens the bilayer and shrinks its area at a
near-constant volume (+2.8 kJ/mol: area −11 %, thickness +7 %), the all-pair ramp does the
reverse, and the head–tail ramp rose to 2.8 and to its bound of 8 while the area channel made up
for it. With the area term (below) they do not: the term exerts no force, so only the head–tail
ramp moves the packing, and the area term takes up the area it costs. The area alone left a
converged inversion's bilayer 5 % thin at the reference's area in one of seven fresh quick runs
(7.6 % thin at zero tension); with the thickness channel the same tables came out +0.9 / −0.7 %
in area / thickness (head–tail ramp 0.7–3.5 kJ/mol on six references).

A third knob was tried, with the local-density spring (:mod:`~multiscale.openmm.local_density`)
in the run: one shift of the spring's targets, set by the thickness channel (DMPC quick run,
12-07). It is a shape knob too: a denser target contracted the area (−13 % with the all-pair
ramp at its bound of 2 kJ/mol) and thickened the bilayer (+3 %, the shift at its bound of +4
neighbours within 180 ps), the volume nearly kept. So none of the three sets the volume per
lipid, which the thickness at the reference's area needs; it comes from the fitted tables.

The area can instead be set by an **area term** of the model (``area_by="tension"``):
U_A = −γ_A·A, linear in the box area A, with every pair ramp at 0. A solvent-free model's
potential of mean force depends on the box as well as on the bead positions (the removed
solvent's free energy changes with the box: Das & Andersen's multiscale coarse-graining in the
isothermal–isobaric ensemble, JCP 2010, and Dunn & Noid's volume potential U_V(V), JCP 2015);
for a bilayer whose height is fixed that dependence is on its area, and a linear term is its
lowest order. Unlike an all-pair ramp it exerts no force, so at a given area the packing, and
so the volume per lipid the pair tables' inversion matched, is untouched: the thickness at the
reference's area is what the tables give. A linear area term and a barostat's surface tension
are the same thing to a Monte Carlo barostat (ΔU_A = −γ_A ΔA in its acceptance), and no OpenMM
force can read the box, so the term is carried by ``MonteCarloMembraneBarostat``'s tension
parameter (:data:`AREA_TENSION_PARAMETER`): the CG System at zero external tension shows a
tension of γ_A, which is the model's, not the surroundings'. In NVT it is a constant.

Units: kJ/mol, nm, nm², K, ps; the area term's γ_A in bar·nm (10 bar·nm = 1 mN/m).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import openmm

#: the thickness channel of :func:`control_membrane`: its sensitivity, relative thickness per
#: kJ/mol of intermolecular head–tail ramp (DMPC quick patch, 320 ps runs at fixed ramps and at
#: the reference area: 2.9 nm at 0, 3.9 nm at 5.45 kJ/mol, of 3.46 nm), and its integral time,
#: shorter than the thickness's own relaxation (~100 ps in those runs) so that a 480 ps run
#: settles (at 100 ps the ramp was still climbing at the end, at 40 ps nearly settled), at the
#: cost of some overshoot
THICKNESS_SENSITIVITY = 0.05
THICKNESS_CONTROL_TIME_PS = 30.0
#: bounds of the two ramps (kJ/mol). The head–tail ramp stands in for the hydrophobic effect, a
#: repulsion, and never attracts: a head–tail attraction of 4.5 kJ/mol, reached 60 ps into one run
#: while the bilayer was 13 % thick in the early transient, pulled the heads into the core and the
#: bilayer apart, and so did −1.5 (the former bound) in one of three later runs (29 of 32 lipids
#: lost, with the thickness at +8.6 % when the control run ended; bounded at 0 the same run kept
#: its bilayer, 6.3 % thick). Two runs bounded at +3.5 sat at the bound 11–13 % thin, so it may
#: repel up to 8 (one of three runs with this range still sat at +8, 8 % thin: its CG volume per
#: lipid was 6.6 % small, which this ramp does not restore; README). The all-pair ramp: ±2
#: (settled values −0.5 to 1.2)
HEAD_TAIL_RANGE_KJ_MOL = (0.0, 8.0)
ALL_PAIR_LIMIT_KJ_MOL = 2.0
#: the area channel of :func:`control_membrane`: its sensitivity, relative area at zero tension
#: per kJ/mol of intermolecular all-pair ramp (an all-pair ramp of 1.4 kJ/mol moved the DMPC quick
#: patch's area by 40 %; 0.58 against 0.90 kJ/mol gave −5 % against +3 %), its integral time and
#: noise filter (ps): the area follows a change of the ramps over ~100 ps (at 20 ps the loop
#: oscillated with a period of ~70 ps) and a 32-lipid patch's area swings by ±2 % from frame to frame
AREA_SENSITIVITY = 0.28
AREA_CONTROL_TIME_PS = 40.0
AREA_FILTER_PS = 5.0
#: the area term's channel (``area_by="tension"``): the barostat's surface tension parameter, its
#: sensitivity (relative area per bar·nm: the all-pair ramp's 0.28 per kJ/mol over the lateral
#: pressure that 1 kJ/mol of it makes in the DMPC quick patch, ~630 bar, times its 5.96 nm
#: height) and bound (±6000 bar·nm, the lateral pressure of the all-pair ramp's ±2 kJ/mol
#: bound within a factor of 1.3); the area channel's integral time and filter
AREA_TENSION_PARAMETER = openmm.MonteCarloMembraneBarostat.SurfaceTension()
AREA_TENSION_SENSITIVITY = 7.5e-5
AREA_TENSION_LIMIT_BAR_NM = 6000.0
AREA_KNOBS = ("ramp", "tension")
#: revisions (``revise``) only within this first fraction of the control run: each moves the
#: bilayer's equilibrium, which then takes ~100 ps to settle under the controllers
REVISE_UNTIL = 0.6


def _thickness_measure(n: int, head_indices: Sequence[int]):
    import mdtraj

    from multiscale.cg.analysis.thickness import bilayer_thickness

    top = mdtraj.Topology()
    residue = top.add_residue("B", top.add_chain())
    for _ in range(n):
        top.add_atom("B", mdtraj.element.virtual, residue)
    heads = np.asarray(head_indices, dtype=np.int64)

    def thickness(x, cell, _parameters=None):
        frame = mdtraj.Trajectory(np.asarray(x)[None], top)
        frame.unitcell_vectors = np.asarray(cell)[None]
        return float(bilayer_thickness(frame, heads)[0])

    return thickness


def _global_parameters(system: openmm.System) -> set:
    """The names of the global parameters the System's forces declare (a barostat's excluded)."""
    names = set()
    for force in system.getForces():
        for k in range(getattr(force, "getNumGlobalParameters", lambda: 0)()):
            names.add(force.getGlobalParameterName(k))
    return names


def _box_area(x, cell, _parameters=None) -> float:
    return float(abs(np.cross(np.asarray(cell)[0], np.asarray(cell)[1])[2]))


def control_membrane(system: openmm.System, positions, box, head_indices: Sequence[int], *, target_nm: float,
                     target_area_nm2: float, temperature_K: float, steps: int, timestep_ps: float, inner_steps: int = 1,
                     platform: str = "CPU", seed: int = 0, updates: int = 0, revise=None, revise_every_ps: float = 0.0,
                     thickness: bool = True, area_by: str = "ramp", log=None) -> Dict:
    """The head–tail ramp that holds the bilayer at thickness ``target_nm`` and the all-pair ramp
    that holds its box area (xy) at ``target_area_nm2`` at zero tension, both set by feedback
    during one run of ``steps`` (:func:`~multiscale.openmm.ramp_control.control_ramps`).
    ``system`` holds a ``MonteCarloMembraneBarostat`` (zero tension, box height fixed), has
    adjustable ramps (``build_cg_system(adjustable_ramps=True)``) and holds the head–tail pairs'
    intermolecular ramp at 1 kJ/mol and no other, so that
    :data:`~multiscale.openmm.tabulated.INTERMOLECULAR_SCALE` is ``A_ht`` in kJ/mol and
    :data:`~multiscale.openmm.tabulated.INTERMOLECULAR_ALL_PAIRS` is ``A_all``. ``updates`` (0:
    one every ~60 steps, at most 1000) is how often both values are measured and the ramps set.
    ``revise`` (see :func:`~multiscale.openmm.ramp_control.control_ramps`), every
    ``revise_every_ps`` in the first 60 % of the run (:data:`REVISE_UNTIL`): e.g. the bonded
    tables refined on the frames since its last call, so that the ramps and the bonded tables
    converge together.

    ``thickness=False``: the area channel alone, the head–tail ramp held at 0 and the thickness
    only observed (``result["observed"]["thickness"]``, with its ``target``); the ramp is then
    averaged over the part of the run after the last revision (40 %), since no slow thickness
    drift keeps it climbing.

    ``area_by="tension"``: the area set by the model's area term −γ_A·A instead (see the module's
    docstring), the barostat's tension parameter :data:`AREA_TENSION_PARAMETER` (bar·nm), with
    the all-pair ramp held at 0; ``tension_bar_nm`` in the result is γ_A (0 with the ramp).

    Returns :func:`~multiscale.openmm.ramp_control.control_ramps`'s result with ``A_head_tail_kj_mol``
    and ``A_all_kj_mol`` (each its mean over the last 15 % of the run), ``tension_bar_nm``,
    ``thickness_nm`` and ``area_nm2`` (their means there), and ``area_parameter`` (the area
    channel's parameter). The thickness is the plain one: measured at the target
    area at the bilayer's volume (thickness × area / target) instead, it stayed 2–3 % high in one
    seed whose CG volume was larger than the reference's, and its ramp never settled."""
    from multiscale.openmm.ramp_control import ControlChannel, control_ramps
    from multiscale.openmm.tabulated import INTERMOLECULAR_ALL_PAIRS, INTERMOLECULAR_SCALE

    if not 1.0 < target_nm < 10.0:
        raise ValueError(f"target_nm={target_nm} is not a bilayer thickness in nm (DMPC: ~3.5 nm)")
    if not 1.0 < target_area_nm2 < 1e4:
        raise ValueError(f"target_area_nm2={target_area_nm2} is not a bilayer patch's area in nm² (32 DMPC: ~10 nm²)")
    if not any(isinstance(f, openmm.MonteCarloMembraneBarostat) for f in system.getForces()):
        raise ValueError("control_membrane sets the area at zero tension: the System needs a MonteCarloMembraneBarostat "
                         "(multiscale.openmm.assembly.MembraneBarostat, z_mode 'fixed')")
    if area_by not in AREA_KNOBS:
        raise ValueError(f"area_by must be one of {AREA_KNOBS} (an all-pair ramp, or the model's area term), got {area_by!r}")
    measure_thickness = _thickness_measure(system.getNumParticles(), head_indices)
    fixed = {}
    if area_by == "ramp":
        area_parameter = INTERMOLECULAR_ALL_PAIRS
        area_channel = ControlChannel(INTERMOLECULAR_ALL_PAIRS, _box_area, target_area_nm2, AREA_SENSITIVITY,
                                      AREA_CONTROL_TIME_PS, filter_ps=AREA_FILTER_PS, limit=ALL_PAIR_LIMIT_KJ_MOL)
    else:
        area_parameter = AREA_TENSION_PARAMETER
        area_channel = ControlChannel(AREA_TENSION_PARAMETER, _box_area, target_area_nm2, AREA_TENSION_SENSITIVITY,
                                      AREA_CONTROL_TIME_PS, filter_ps=AREA_FILTER_PS, limit=AREA_TENSION_LIMIT_BAR_NM)
        if INTERMOLECULAR_ALL_PAIRS in _global_parameters(system):
            fixed[INTERMOLECULAR_ALL_PAIRS] = 0.0
    channels = [area_channel]
    if thickness:
        channels.insert(0, ControlChannel(INTERMOLECULAR_SCALE, measure_thickness, target_nm, THICKNESS_SENSITIVITY,
                                          THICKNESS_CONTROL_TIME_PS, lower=HEAD_TAIL_RANGE_KJ_MOL[0],
                                          limit=HEAD_TAIL_RANGE_KJ_MOL[1]))
        extra = {"settled": 0.15, "fixed": fixed}
    else:
        if INTERMOLECULAR_SCALE in _global_parameters(system) or area_by == "ramp":
            fixed[INTERMOLECULAR_SCALE] = 0.0
        extra = {"settled": 1.0 - REVISE_UNTIL, "fixed": fixed,
                 "observe": {"thickness": measure_thickness}}
    updates = updates or max(10, min(1000, steps // 60))
    revise_every = 0
    if revise is not None:
        if not revise_every_ps > 0:
            raise ValueError(f"revise needs revise_every_ps > 0, got {revise_every_ps}")
        revise_every = max(int(round(revise_every_ps / ((steps // updates) * timestep_ps))), 1)
    result = control_ramps(system, positions, box, channels, temperature_K=temperature_K, steps=steps,
                           timestep_ps=timestep_ps, inner_steps=inner_steps, platform=platform, seed=seed,
                           updates=updates, revise=revise, revise_every=revise_every, revise_until=REVISE_UNTIL,
                           log=log, **extra)
    area = result["channels"][area_parameter]
    knob = {"area_parameter": area_parameter, "A_all_kj_mol": area["A"] if area_by == "ramp" else 0.0,
            "tension_bar_nm": area["A"] if area_by == "tension" else 0.0}
    if thickness:
        channel = result["channels"][INTERMOLECULAR_SCALE]
        return {**result, **knob, "A_head_tail_kj_mol": channel["A"], "thickness_nm": channel["value"],
                "area_nm2": area["value"], "chosen": "means of the controllers over the last 15 % of their run"}
    result["observed"]["thickness"]["target"] = float(target_nm)
    return {**result, **knob, "A_head_tail_kj_mol": 0.0,
            "thickness_nm": result["observed"]["thickness"]["value"], "area_nm2": area["value"],
            "chosen": "the area controller's mean over the last 40 % of its run (after the last revision); "
                      "the head-tail ramp held at 0"}


#: a bonded refinement after the control run (its ramps fixed) only where the run met both of its
#: targets within this fraction. Refined on a bilayer whose thickness is off, the tail tables
#: learn that environment: of two quick runs whose head–tail ramp ended at a bound (thickness −6.7
#: and +8.6 % at the end of the control run), one then shrank 17 % in area at zero tension
#: (6.9 % without the refinement) and one lost 27 of 32 lipids from their leaflets
SETTLED_TOLERANCE = 0.03


def control_settled(found, tolerance: float = SETTLED_TOLERANCE) -> Tuple[bool, str]:
    """(whether :func:`control_membrane`'s result ``found`` met both targets within ``tolerance``
    (relative), the reason in words)."""
    from multiscale.openmm.tabulated import INTERMOLECULAR_ALL_PAIRS, INTERMOLECULAR_SCALE

    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance={tolerance} must be a fraction in (0, 1)")
    misses = []
    area_parameter = found.get("area_parameter", INTERMOLECULAR_ALL_PAIRS)  # results before the area term: a ramp
    for parameter, what in ((INTERMOLECULAR_SCALE, "thickness"), (area_parameter, "box area")):
        channel = found["channels"].get(parameter)
        if channel is None:  # thickness observed, not controlled (control_membrane(thickness=False))
            channel = found["observed"]["thickness"]
        off = channel["value"] / channel["target"] - 1.0
        if abs(off) > tolerance:
            misses.append(f"{what} {100 * off:+.1f} %")
    if misses:
        return False, f"the control run missed its targets by more than {100 * tolerance:g} % ({', '.join(misses)})"
    return True, f"the control run met both targets within {100 * tolerance:g} %"


def rescale_area(positions, box, target_box, molecules: Sequence[Sequence[int]]) -> np.ndarray:
    """``positions`` (n, 3, nm) of a bilayer in ``box`` moved into ``target_box`` (rectangular in
    xy, the same height) as a membrane barostat would: each molecule's centroid scaled in x and y,
    its shape kept. For starting an NVT run at the reference's area from a zero-tension state."""
    x = np.array(positions, dtype=float)
    box, target_box = np.asarray(box, dtype=float), np.asarray(target_box, dtype=float)
    factor = np.array([target_box[0, 0] / box[0, 0], target_box[1, 1] / box[1, 1]])
    if not np.all((factor > 0.7) & (factor < 1.4)):
        raise ValueError(f"the boxes' sides differ by a factor {factor}: not the same bilayer patch")
    for m in molecules:
        m = np.asarray(m, dtype=np.int64)
        centre = x[m, :2].mean(axis=0)
        x[m, :2] += centre * (factor - 1.0)
    return x
