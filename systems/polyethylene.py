"""TraPPE-UA n-alkane / polyethylene melts in OpenMM (Martin & Siepmann, J. Phys. Chem. B 102,
2569 (1998)).

Each CH3 / CH2 group is one united-atom (UA) site. The published parameters are kept below in the
units of the paper (K, Å, degrees) and converted to OpenMM units (nm, kJ/mol, rad) with the
named constants of :mod:`multiscale.units`; the tests check the conversion against the published
numbers.

==================  ===========================================  =====================================
term                published (Martin & Siepmann 1998)           OpenMM force used here
==================  ===========================================  =====================================
LJ CH3              ε/k_B = 98 K, σ = 3.75 Å                     NonbondedForce, CutoffPeriodic,
LJ CH2              ε/k_B = 46 K, σ = 3.95 Å                     Lorentz–Berthelot, dispersion
                    Lorentz–Berthelot, r_c = 14 Å + tail corr.   (tail) correction on
                    intramolecular only > 3 bonds apart          1-2, 1-3, 1-4 pairs excluded
bond CHx–CHy        fixed at 1.54 Å (constraint)                 HarmonicBondForce, r0 = 0.154 nm,
                                                                 k = :data:`BOND_K_KJ_MOL_NM2` (below)
angle CHx–CH2–CHy   U = (k_θ/2)(θ − θ0)², θ0 = 114.0°,           HarmonicAngleForce ½k(θ − θ0)²
                    k_θ/k_B = 62 500 K rad⁻²                     with k = k_θ
torsion             U = c1[1 + cos φ] + c2[1 − cos 2φ]           PeriodicTorsionForce k(1 + cos(nφ − φ0)):
CHx–CH2–CH2–CHy       + c3[1 + cos 3φ]; c1/k_B = 355.03 K,       (n=1, φ0=0, k=c1), (n=2, φ0=π, k=c2),
                    c2/k_B = −68.19 K, c3/k_B = 791.32 K         (n=3, φ0=0, k=c3); 1 − cos 2φ =
                                                                 1 + cos(2φ − π). Trans φ = 180° is
                                                                 the minimum (U = 0).
==================  ===========================================  =====================================

Why a stiff harmonic bond instead of the published constraint
-------------------------------------------------------------
The mapped forces of a coarse-graining must be the full forces on every site, and OpenMM's
``State.getForces()`` omits constraint forces. So the bond is a harmonic spring, stiff enough to
behave almost like the constraint: ``k = k_B T_ref / δ²`` with a root-mean-square bond-length
fluctuation δ = 0.003 nm (2 % of the bond) at T_ref = 450 K, i.e. k ≈ 4.157 × 10⁵ kJ mol⁻¹ nm⁻²
(``sqrt(k_B T / k)`` is the RMS fluctuation of a classical harmonic bond). The period of an
isolated CH2–CH2 stretch is then 2π sqrt(μ/k) ≈ 26 fs (μ = 7.01 amu); the fastest normal mode of an
all-trans C16 chain (from the mass-weighted Hessian of this force field) has ω ≈ 288 ps⁻¹, a period
of ≈ 22 fs, so Verlet-type integrators are stable below 2/ω ≈ 7 fs. **Recommended time step: 1 fs**
(~22 steps per fastest period; LangevinMiddleIntegrator), for production runs whose bond
statistics and forces feed a coarse-graining. 2 fs (~11 steps per period) is fine for packing,
equilibration and NPT density runs. The published model (rigid bonds) differs only in that the
bond here fluctuates by ~0.003 nm about 0.154 nm.

Topology conventions
--------------------
One OpenMM chain per polymer molecule, one residue per UA site named ``CH3`` (chain ends) or
``CH2``; the single atom of each residue has the same name (``CH3``/``CH2``) and **element
None**. A UA site is not a carbon atom: its mass is 15.035 amu (CH3) or 14.027 amu (CH2)
(:data:`SITE_MASSES_AMU`), set explicitly in the System. With element None, the project's
``multiscale.openmm.system.topology_types`` and ``multiscale.data.sampling`` take the atom name as
the particle type, so the site types come out as ``CH3``/``CH2`` (with element C every site would
be typed ``C`` and tools would give it the carbon mass 12.011). Masses always come from the
System (or :data:`SITE_MASSES_AMU`), never from the Topology.

Units: lengths and positions in nm, energies in kJ/mol, angles in rad inside Systems (the tables
below keep the published degrees/K/Å), masses in amu (dalton), densities in g/cm³, temperatures in
K. Box vectors are (3, 3) arrays whose *rows* are the cell vectors (OpenMM's convention).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import Vec3, app, unit

from multiscale.units import ANGSTROM_TO_NM, KB_KJ_PER_MOL_K, kT

# ----------------------------------------------------------------------------------------------
# Published TraPPE-UA parameters (Martin & Siepmann 1998), in the paper's units.
# ----------------------------------------------------------------------------------------------

#: LJ well depth ε/k_B in K, per site type.
EPSILON_OVER_KB_K: Dict[str, float] = {"CH3": 98.0, "CH2": 46.0}
#: LJ diameter σ in Å, per site type.
SIGMA_ANGSTROM: Dict[str, float] = {"CH3": 3.75, "CH2": 3.95}
#: Bond length in Å (a constraint in the original model; see module docstring).
BOND_LENGTH_ANGSTROM = 1.54
#: Equilibrium bend angle θ0 in degrees.
THETA0_DEG = 114.0
#: Bend force constant k_θ/k_B in K rad⁻², for U = (k_θ/2)(θ − θ0)².
K_THETA_OVER_KB_K_PER_RAD2 = 62500.0
#: Torsion coefficients c1, c2, c3 over k_B in K, for U = c1[1+cos φ] + c2[1−cos 2φ] + c3[1+cos 3φ].
TORSION_C_OVER_KB_K: Tuple[float, float, float] = (355.03, -68.19, 791.32)
#: LJ cutoff of the published model, in Å (with analytic tail corrections).
CUTOFF_ANGSTROM = 14.0

#: UA site masses in amu (CH3 = C + 3 H, CH2 = C + 2 H).
SITE_MASSES_AMU: Dict[str, float] = {"CH3": 15.035, "CH2": 14.027}

# ----------------------------------------------------------------------------------------------
# The same parameters in OpenMM units (nm, kJ/mol, rad).
# ----------------------------------------------------------------------------------------------

#: ε per site type in kJ/mol.
EPSILON_KJ_MOL: Dict[str, float] = {site: value * KB_KJ_PER_MOL_K for site, value in EPSILON_OVER_KB_K.items()}
#: σ per site type in nm.
SIGMA_NM: Dict[str, float] = {site: value * ANGSTROM_TO_NM for site, value in SIGMA_ANGSTROM.items()}
#: Bond length r0 in nm.
BOND_LENGTH_NM = BOND_LENGTH_ANGSTROM * ANGSTROM_TO_NM
#: θ0 in rad.
THETA0_RAD = math.radians(THETA0_DEG)
#: HarmonicAngleForce constant in kJ mol⁻¹ rad⁻²: OpenMM's ½k(θ−θ0)² equals (k_θ/2)(θ−θ0)² for k = k_θ.
ANGLE_K_KJ_MOL_RAD2 = K_THETA_OVER_KB_K_PER_RAD2 * KB_KJ_PER_MOL_K
#: Torsion c1, c2, c3 in kJ/mol.
TORSION_C_KJ_MOL: Tuple[float, float, float] = tuple(c * KB_KJ_PER_MOL_K for c in TORSION_C_OVER_KB_K)
#: The torsion as PeriodicTorsionForce terms (periodicity n, phase φ0 in rad, k in kJ/mol), each
#: k(1 + cos(nφ − φ0)): c1[1+cos φ]; c2[1−cos 2φ] = c2[1+cos(2φ−π)]; c3[1+cos 3φ].
TORSION_TERMS: Tuple[Tuple[int, float, float], ...] = (
    (1, 0.0, TORSION_C_KJ_MOL[0]),
    (2, math.pi, TORSION_C_KJ_MOL[1]),
    (3, 0.0, TORSION_C_KJ_MOL[2]),
)
#: Default (published) LJ cutoff in nm.
CUTOFF_NM = CUTOFF_ANGSTROM * ANGSTROM_TO_NM

#: Temperature (K) and RMS bond-length fluctuation (nm) that define the default bond stiffness.
BOND_K_REFERENCE_TEMPERATURE_K = 450.0
BOND_RMS_FLUCTUATION_NM = 0.003
#: Harmonic bond constant in kJ mol⁻¹ nm⁻² (OpenMM ½k(r−r0)²): k_B T_ref / δ² ≈ 4.157e5, so the
#: RMS bond fluctuation is 0.003 nm at 450 K (0.0025 nm at 298 K). See the module docstring.
BOND_K_KJ_MOL_NM2 = kT(BOND_K_REFERENCE_TEMPERATURE_K) / BOND_RMS_FLUCTUATION_NM**2
#: Recommended MD time step in ps with the default bond (see module docstring).
RECOMMENDED_TIMESTEP_PS = 0.001

#: Force groups of the System built by :func:`trappe_system`.
FORCE_GROUPS: Dict[str, int] = {"bond": 0, "angle": 1, "torsion": 2, "nonbonded": 3}

# ----------------------------------------------------------------------------------------------
# Densities.
# ----------------------------------------------------------------------------------------------

#: 1 amu/nm³ in g/cm³ (1 amu = 1.66053906660e-24 g, CODATA 2018; 1 nm³ = 1e-21 cm³).
AMU_PER_NM3_TO_G_PER_CM3 = 1.66053906660e-24 / 1e-21
#: Plausible range of liquid alkane / PE melt densities accepted by :func:`build_melt`, g/cm³
#: (crystalline PE is ~1.00; liquids near the critical point ~0.2).
DENSITY_RANGE_G_CM3 = (0.2, 1.05)

# Default-density estimate (see estimate_melt_density_g_cm3): specific volume
# v(M, T) = v_inf(T) + V_END / M with v_inf(T) = v_inf(298.15 K) exp(ALPHA (T - 298.15 K)).
#: Density of amorphous polyethylene at 298.15 K, g/cm³ (the textbook 0.855).
AMORPHOUS_PE_DENSITY_298K_G_CM3 = 0.855
#: Volumetric thermal expansion coefficient of PE melts, K⁻¹ (takes 0.855 g/cm³ at 298 K to
#: ~0.76 g/cm³ at 450 K, the long-chain PE melt density).
PE_THERMAL_EXPANSION_PER_K = 7.6e-4
#: Excess volume of the two chain ends per molecule, cm³/mol: (1/ρ_n − 1/0.855)·M_n is 29–31
#: cm³/mol for the n-alkanes C6–C16 at 298 K (experimental ρ: hexane 0.655, octane 0.699, decane
#: 0.726, dodecane 0.745, hexadecane 0.770 g/cm³).
CHAIN_END_VOLUME_CM3_MOL = 29.5
#: Reference temperature of the two constants above, K.
DENSITY_REFERENCE_TEMPERATURE_K = 298.15

# Packing and minimisation.
#: Closest non-bonded approach (nm) the random-walk packer tries to keep.
PACKING_MIN_DISTANCE_NM = 0.30
#: Width (nm) of the Gaussian overlap penalty of the packer below PACKING_MIN_DISTANCE_NM.
PACKING_OVERLAP_WIDTH_NM = 0.03
#: Trial positions per site in the Rosenbluth-style growth.
PACKING_TRIALS = 16
#: Soft-core α of the push-off minimisations, U = 4ε(1/s² − 1/s), s = (r/σ)⁶ + α (U(0) = 4ε(1/α² − 1/α)).
SOFT_CORE_ALPHAS = (0.5, 0.1, 0.02)
#: Force tolerance (kJ mol⁻¹ nm⁻¹) of the minimisations.
MINIMIZE_TOLERANCE_KJ_MOL_NM = 10.0


# ----------------------------------------------------------------------------------------------
# Small helpers (public: the tests and analysis use them).
# ----------------------------------------------------------------------------------------------


def torsion_energy_kj_mol(phi_rad) -> np.ndarray:
    """The published TraPPE torsion energy (kJ/mol) at dihedral(s) ``phi_rad`` (IUPAC: trans = π)."""
    phi = np.asarray(phi_rad, dtype=np.float64)
    c1, c2, c3 = TORSION_C_KJ_MOL
    return c1 * (1 + np.cos(phi)) + c2 * (1 - np.cos(2 * phi)) + c3 * (1 + np.cos(3 * phi))


def site_types(topology: app.Topology) -> List[str]:
    """The UA site type (``'CH3'`` or ``'CH2'``) of every atom, from the atom names."""
    types = [atom.name for atom in topology.atoms()]
    bad = sorted({t for t in types if t not in SITE_MASSES_AMU})
    if bad:
        raise ValueError(
            f"atoms named {bad} are not TraPPE-UA alkane sites; name every atom 'CH3' or 'CH2' "
            "(build the Topology with polyethylene_topology())"
        )
    return types


def box_volume_nm3(box: np.ndarray) -> float:
    """Volume (nm³) of the cell whose rows are the box vectors (nm)."""
    return float(abs(np.linalg.det(np.asarray(box, dtype=np.float64))))


def mass_density_g_cm3(system: openmm.System, box: np.ndarray) -> float:
    """Mass density (g/cm³): the System's particle masses over the volume of ``box`` (rows, nm)."""
    mass = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles()))
    return mass / box_volume_nm3(box) * AMU_PER_NM3_TO_G_PER_CM3


def chain_mass_amu(chain_length: int) -> float:
    """Mass (amu) of one CH3–(CH2)_{n−2}–CH3 chain of ``chain_length`` UA sites."""
    return 2 * SITE_MASSES_AMU["CH3"] + (chain_length - 2) * SITE_MASSES_AMU["CH2"]


def estimate_melt_density_g_cm3(chain_length: int, temperature_K: float) -> float:
    """A rough liquid density (g/cm³) of n-alkanes / PE of ``chain_length`` carbons at
    ``temperature_K``, for the starting box of :func:`build_melt`; equilibrate with NPT before use.

    Specific volume v = v_∞(T) + V_end / M: v_∞ is that of amorphous PE (0.855 g/cm³ at 298 K,
    expanding by 7.6e-4 K⁻¹, ≈ 0.76 g/cm³ at 450 K) and V_end = 29.5 cm³/mol the chain-end excess
    volume fitted to n-alkane densities at 298 K (it reproduces n-hexadecane's 0.770 g/cm³ within
    0.2 %). V_end is held at its 298 K value although chain ends take more room when hot, so short
    chains far above room temperature come out several percent too dense (n-dodecane at 450 K:
    0.673 g/cm³ estimated). Only a starting point: the TraPPE density comes from NPT.
    """
    _check_positive_int(chain_length, "chain_length", minimum=2)
    if not temperature_K > 0:
        raise ValueError(f"temperature_K must be a positive temperature in K, got {temperature_K!r}")
    v_inf = math.exp(PE_THERMAL_EXPANSION_PER_K * (temperature_K - DENSITY_REFERENCE_TEMPERATURE_K))
    v_inf /= AMORPHOUS_PE_DENSITY_298K_G_CM3
    mass = chain_mass_amu(chain_length)
    return mass / (mass * v_inf + CHAIN_END_VOLUME_CM3_MOL)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _as_box(box) -> np.ndarray:
    if hasattr(box, "value_in_unit"):
        box = box.value_in_unit(unit.nanometer)
    try:
        array = np.asarray([[float(x) for x in row] for row in box], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.full(1, np.nan)
    if array.shape != (3, 3) or not np.all(np.isfinite(array)) or box_volume_nm3(array) <= 0:
        raise ValueError(f"box must be a (3, 3) array of cell vectors (rows) in nm with positive volume, got {box!r}")
    return array


def box_widths_nm(box: np.ndarray) -> np.ndarray:
    """Perpendicular widths (nm) of the cell: volume over the area of each pair of faces."""
    box = _as_box(box)
    volume = box_volume_nm3(box)
    a, b, c = box
    return np.array([volume / np.linalg.norm(np.cross(b, c)), volume / np.linalg.norm(np.cross(c, a)), volume / np.linalg.norm(np.cross(a, b))])


def _check_cutoff(cutoff_nm: float, box: np.ndarray) -> float:
    cutoff = float(cutoff_nm)
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff_nm must be a positive distance in nm, got {cutoff_nm!r}")
    half = 0.5 * float(box_widths_nm(box).min())
    if cutoff >= half:
        raise ValueError(
            f"cutoff_nm={cutoff:g} is not below half the box width ({half:.4f} nm); the minimum-image "
            f"convention needs cutoff < half the box. Pass a smaller cutoff_nm (< {half:.4f}) for this "
            f"small test box, or build a bigger box (more chains) to keep the published {CUTOFF_NM:g} nm"
        )
    return cutoff


# ----------------------------------------------------------------------------------------------
# Topology and System.
# ----------------------------------------------------------------------------------------------


def polyethylene_topology(num_chains: int, chain_length: int) -> app.Topology:
    """An OpenMM Topology of ``num_chains`` linear CH3–(CH2)_{n−2}–CH3 chains of ``chain_length``
    UA sites each (n-alkane C_n; PE for long chains).

    One OpenMM chain per molecule; one residue per site, residue and atom named ``CH3`` (ends) or
    ``CH2``, element None (see the module docstring); bonds along each chain. No periodic box is
    set (:func:`build_melt` sets one).
    """
    num_chains = _check_positive_int(num_chains, "num_chains", 1)
    chain_length = _check_positive_int(chain_length, "chain_length", 2)
    topology = app.Topology()
    for _ in range(num_chains):
        chain = topology.addChain()
        previous = None
        for k in range(chain_length):
            name = "CH3" if k in (0, chain_length - 1) else "CH2"
            residue = topology.addResidue(name, chain, id=str(k + 1))
            atom = topology.addAtom(name, None, residue)
            if previous is not None:
                topology.addBond(previous, atom)
            previous = atom
    return topology


def _bonded_terms(topology: app.Topology, types: Sequence[str]):
    """Bonds, angles and proper torsions (index tuples) from the Topology's bond graph, checking
    that every site has the valence of its type (CH3: 1 bond, CH2: 2 bonds)."""
    n = topology.getNumAtoms()
    neighbours: List[List[int]] = [[] for _ in range(n)]
    bonds = []
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        neighbours[i].append(j)
        neighbours[j].append(i)
        bonds.append((i, j))
    for i, site in enumerate(types):
        valence = 1 if site == "CH3" else 2
        if len(neighbours[i]) != valence:
            raise ValueError(
                f"site {i} ({site}) has {len(neighbours[i])} bonds, but a TraPPE-UA {site} in a linear "
                f"alkane has {valence}; branched chains (CH, C sites) are not supported. Check the Topology's bonds"
            )
    angles = [(i, j, k) for j in range(n) for a, i in enumerate(neighbours[j]) for k in neighbours[j][a + 1 :]]
    torsions = []
    for j, k in bonds:
        for i in neighbours[j]:
            if i == k:
                continue
            for l in neighbours[k]:
                if l != j and l != i:
                    torsions.append((i, j, k, l))
    return bonds, angles, torsions


def trappe_system(
    topology: app.Topology,
    box: Optional[np.ndarray] = None,
    *,
    cutoff_nm: float = CUTOFF_NM,
    bond_k: float = BOND_K_KJ_MOL_NM2,
    dispersion_correction: bool = True,
    constrain_bonds: bool = False,
) -> openmm.System:
    """The TraPPE-UA System for a periodic ``topology`` of linear alkane chains (atoms named
    ``CH3``/``CH2``, e.g. from :func:`polyethylene_topology`).

    ``box``: (3, 3) cell vectors (rows) in nm; None → the Topology's periodic box. ``cutoff_nm``:
    LJ cutoff in nm (published 1.4; smaller values for small test boxes), refused unless below half
    the box width. ``bond_k``: harmonic bond constant in kJ mol⁻¹ nm⁻² (OpenMM ½k(r−r0)²), default
    :data:`BOND_K_KJ_MOL_NM2`. ``dispersion_correction``: the analytic LJ tail correction (energy
    and pressure) of the published model; keep it on except for comparisons with plain truncated LJ.

    Forces (groups in :data:`FORCE_GROUPS`): HarmonicBondForce, HarmonicAngleForce,
    PeriodicTorsionForce (three terms per dihedral, :data:`TORSION_TERMS`) and a NonbondedForce
    (CutoffPeriodic, truncated unshifted LJ, Lorentz–Berthelot, zero charges) with every pair
    up to three bonds apart (1-2, 1-3, 1-4) excluded. Masses from :data:`SITE_MASSES_AMU`. No
    constraints, so ``State.getForces()`` is the full force on every site. No CMMotionRemover.

    ``constrain_bonds``: the published model, every bond a constraint at 0.154 nm and no bond
    force (``bond_k`` unused): the fastest honest reference to time a CG model against, at its
    largest stable step; its forces omit the constraint forces, so force matching uses the
    flexible model.
    """
    if box is None:
        box = topology.getPeriodicBoxVectors()
    if box is None:
        raise ValueError(
            "the TraPPE System is periodic but neither a box nor a Topology box was given; pass box=(3, 3) "
            "cell vectors in nm or call topology.setPeriodicBoxVectors(...)"
        )
    box = _as_box(box)
    cutoff = _check_cutoff(cutoff_nm, box)
    if not (np.isfinite(bond_k) and bond_k > 0):
        raise ValueError(f"bond_k must be a positive force constant in kJ/mol/nm^2, got {bond_k!r}")
    types = site_types(topology)
    bonds, angles, torsions = _bonded_terms(topology, types)

    system = openmm.System()
    for site in types:
        system.addParticle(SITE_MASSES_AMU[site] * unit.dalton)
    system.setDefaultPeriodicBoxVectors(*(Vec3(*row) * unit.nanometer for row in box))

    bond_force = openmm.HarmonicBondForce()
    for i, j in bonds:
        if constrain_bonds:
            system.addConstraint(i, j, BOND_LENGTH_NM)
        else:
            bond_force.addBond(i, j, BOND_LENGTH_NM, float(bond_k))
    angle_force = openmm.HarmonicAngleForce()
    for i, j, k in angles:
        angle_force.addAngle(i, j, k, THETA0_RAD, ANGLE_K_KJ_MOL_RAD2)
    torsion_force = openmm.PeriodicTorsionForce()
    for i, j, k, l in torsions:
        for periodicity, phase, k_torsion in TORSION_TERMS:
            torsion_force.addTorsion(i, j, k, l, periodicity, phase, k_torsion)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(cutoff)
    nonbonded.setUseSwitchingFunction(False)
    nonbonded.setUseDispersionCorrection(bool(dispersion_correction))
    for site in types:
        nonbonded.addParticle(0.0, SIGMA_NM[site], EPSILON_KJ_MOL[site])
    # 1-2 and 1-3 pairs excluded, 1-4 pairs scaled by 0 (i.e. excluded too).
    nonbonded.createExceptionsFromBonds(bonds, 0.0, 0.0)

    for force, group in ((bond_force, "bond"), (angle_force, "angle"), (torsion_force, "torsion"), (nonbonded, "nonbonded")):
        force.setForceGroup(FORCE_GROUPS[group])
        system.addForce(force)
    return system


# ----------------------------------------------------------------------------------------------
# Melt builder.
# ----------------------------------------------------------------------------------------------


class _CellGrid:
    """Placed sites (wrapped into a cubic box of edge L) binned into cells, for overlap queries."""

    def __init__(self, edge: float, reach: float, capacity: int):
        self.edge = edge
        self.n = int(edge // reach)
        self.points = np.empty((capacity, 3))
        self.count = 0
        self.cells: Dict[Tuple[int, int, int], List[int]] = {}

    def _cell(self, point: np.ndarray) -> Tuple[int, int, int]:
        return tuple(int(c) % self.n for c in np.floor(point / self.edge * self.n))

    def add(self, point: np.ndarray) -> int:
        wrapped = point - self.edge * np.floor(point / self.edge)
        index = self.count
        self.points[index] = wrapped
        self.count += 1
        if self.n >= 3:
            self.cells.setdefault(self._cell(wrapped), []).append(index)
        return index

    def near(self, point: np.ndarray) -> np.ndarray:
        """Indices of the placed sites within one cell (≥ ``reach``) of ``point``."""
        if self.n < 3:
            return np.arange(self.count)
        wrapped = point - self.edge * np.floor(point / self.edge)
        cx, cy, cz = self._cell(wrapped)
        found: List[int] = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    found.extend(self.cells.get(((cx + dx) % self.n, (cy + dy) % self.n, (cz + dz) % self.n), ()))
        return np.asarray(found, dtype=np.int64)

    def min_distances(self, candidates: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Minimum-image distance (nm) from each candidate to the nearest of ``indices``."""
        if indices.size == 0:
            return np.full(len(candidates), np.inf)
        delta = candidates[:, None, :] - self.points[indices][None, :, :]
        delta -= self.edge * np.round(delta / self.edge)
        return np.sqrt((delta**2).sum(-1)).min(axis=1)


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Positions d (one per φ) with |cd| = r0, angle bcd = θ0 and dihedral abcd = φ (IUPAC)."""
    bc = c - b
    bc /= np.linalg.norm(bc)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    m = np.cross(normal, bc)
    phi = np.asarray(phi)[:, None]
    local_x = -BOND_LENGTH_NM * math.cos(THETA0_RAD)
    radial = BOND_LENGTH_NM * math.sin(THETA0_RAD)
    return c + local_x * bc + radial * (np.cos(phi) * m + np.sin(phi) * normal)


def _random_unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    v = rng.normal(size=(count, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _choose(rng: np.random.Generator, log_weights: np.ndarray) -> int:
    w = np.exp(log_weights - log_weights.max())
    return int(rng.choice(len(w), p=w / w.sum()))


def _pack_chains(num_chains: int, chain_length: int, edge: float, temperature_K: float, rng: np.random.Generator) -> np.ndarray:
    """Self-avoiding random walks in a cubic periodic box of edge ``edge`` nm, grown site by site
    with Rosenbluth-style trials: bond r0, angle θ0, torsion chosen among uniform trials with weight
    exp(−U_torsion/k_BT − overlap penalty), so torsions follow the TraPPE trans/gauche statistics
    while sites dodge their neighbours. Returns unwrapped (whole-chain) positions in nm."""
    beta = 1.0 / kT(temperature_K)
    positions = np.empty((num_chains * chain_length, 3))
    grid = _CellGrid(edge, PACKING_MIN_DISTANCE_NM + BOND_LENGTH_NM, len(positions))

    def penalty(candidates: np.ndarray, previous: np.ndarray, own_recent: Iterable[int]) -> np.ndarray:
        # every candidate lies one bond from `previous`, and the grid's cells are at least
        # PACKING_MIN_DISTANCE_NM + one bond wide, so the cells around `previous` hold every site
        # that can come closer than PACKING_MIN_DISTANCE_NM to a candidate.
        near = grid.near(previous)
        if near.size:
            near = near[~np.isin(near, list(own_recent))]
        r = grid.min_distances(candidates, near)
        short = np.clip(PACKING_MIN_DISTANCE_NM - r, 0.0, None)
        return (short / PACKING_OVERLAP_WIDTH_NM) ** 2

    for chain in range(num_chains):
        start = chain * chain_length
        # first site: the emptiest of several random points
        trials = rng.random((PACKING_TRIALS * 4, 3)) * edge
        gaps = np.array([grid.min_distances(t[None], grid.near(t))[0] for t in trials])
        positions[start] = trials[int(np.argmax(gaps))]
        grid.add(positions[start])
        for k in range(1, chain_length):
            index = start + k
            previous = positions[index - 1]
            if k == 1:
                candidates = previous + BOND_LENGTH_NM * _random_unit_vectors(rng, PACKING_TRIALS)
                log_w = -penalty(candidates, previous, range(start, index))
            elif k == 2:
                # a random reference point makes the dihedral (hence the azimuth) uniform
                reference = positions[index - 2] + _random_unit_vectors(rng, 1)[0]
                phi = rng.uniform(-math.pi, math.pi, PACKING_TRIALS)
                candidates = _place(reference, positions[index - 2], previous, phi)
                log_w = -penalty(candidates, previous, range(start, index))
            else:
                phi = rng.uniform(-math.pi, math.pi, PACKING_TRIALS)
                candidates = _place(positions[index - 3], positions[index - 2], previous, phi)
                log_w = -beta * torsion_energy_kj_mol(phi) - penalty(candidates, previous, range(index - 3, index))
            positions[index] = candidates[_choose(rng, log_w)]
            grid.add(positions[index])
    # put each chain's centre of geometry inside the box (chains stay whole)
    for chain in range(num_chains):
        sl = slice(chain * chain_length, (chain + 1) * chain_length)
        positions[sl] -= edge * np.floor(positions[sl].mean(axis=0) / edge)
    return positions


def _soft_core_system(system: openmm.System) -> openmm.System:
    """A copy of a :func:`trappe_system` System whose LJ is soft-core, U = 4ε(1/s² − 1/s),
    s = (r/σ)⁶ + α, finite at r = 0; α is the global parameter ``alpha``."""
    soft = openmm.XmlSerializer.clone(system)
    index = next(i for i, f in enumerate(soft.getForces()) if isinstance(f, openmm.NonbondedForce))
    nonbonded = soft.getForce(index)
    custom = openmm.CustomNonbondedForce(
        "4*eps*(1/s^2 - 1/s); s = (r/sig)^6 + alpha; sig = 0.5*(sig1 + sig2); eps = sqrt(eps1*eps2)"
    )
    custom.addGlobalParameter("alpha", SOFT_CORE_ALPHAS[0])
    custom.addPerParticleParameter("sig")
    custom.addPerParticleParameter("eps")
    custom.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    custom.setCutoffDistance(nonbonded.getCutoffDistance())
    for i in range(nonbonded.getNumParticles()):
        _, sigma, epsilon = nonbonded.getParticleParameters(i)
        custom.addParticle([sigma.value_in_unit(unit.nanometer), epsilon.value_in_unit(unit.kilojoule_per_mole)])
    for k in range(nonbonded.getNumExceptions()):
        i, j, *_ = nonbonded.getExceptionParameters(k)
        custom.addExclusion(i, j)
    soft.removeForce(index)
    soft.addForce(custom)
    return soft


def _minimize(system: openmm.System, positions: np.ndarray, platform: openmm.Platform, alphas=(None,)):
    """Minimise (LocalEnergyMinimizer) once per soft-core ``alpha`` (None: the System as is).
    Returns (positions nm, potential energy kJ/mol, forces kJ/mol/nm) at the end."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    try:
        context.setPositions(positions)
        for alpha in alphas:
            if alpha is not None:
                context.setParameter("alpha", alpha)
            openmm.LocalEnergyMinimizer.minimize(context, MINIMIZE_TOLERANCE_KJ_MOL_NM, 0)
        state = context.getState(getPositions=True, getEnergy=True, getForces=True)
        return (
            np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64),
            state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)),
        )
    finally:
        del context


def build_melt(
    num_chains: int,
    chain_length: int,
    *,
    density_g_cm3: Optional[float] = None,
    temperature_K: float = 450.0,
    seed: int = 0,
    platform: str = "CPU",
    minimize: bool = True,
    cutoff_nm: float = CUTOFF_NM,
    bond_k: float = BOND_K_KJ_MOL_NM2,
) -> Tuple[app.Topology, np.ndarray, np.ndarray, openmm.System]:
    """A cubic periodic box of ``num_chains`` TraPPE-UA chains of ``chain_length`` sites at
    ``density_g_cm3`` (g/cm³, UA masses), energy-minimised and ready for MD at ``temperature_K``.

    ``density_g_cm3=None`` uses :func:`estimate_melt_density_g_cm3` (≈0.76 g/cm³ for long PE at
    450 K, 0.77 for n-hexadecane at 298 K): a starting density, so equilibrate with NPT
    (``openmm.MonteCarloBarostat``) before production. ``temperature_K`` sets that estimate and the
    Boltzmann weights of the torsions while packing. ``seed`` seeds the packing (numpy).

    Packing: self-avoiding random walks with bond 0.154 nm and angle 114°, torsions drawn with
    their TraPPE Boltzmann weights (trans-biased) among random trials that avoid the sites already
    placed (see ``_pack_chains``). ``minimize=True`` then pushes remaining overlaps apart with a
    soft-core LJ (three minimisations, α = 0.5, 0.1, 0.02), then minimises the full potential
    (``LocalEnergyMinimizer``, tolerance 10 kJ/mol/nm) on ``platform`` ('CPU', 'Reference', ...).

    ``cutoff_nm`` and ``bond_k`` are passed to :func:`trappe_system`; a box smaller than twice the
    cutoff is refused with the box width in the message (few chains: pass a smaller cutoff_nm).

    Returns ``(topology, positions, box, system)``: the Topology (with the periodic box), float64
    (N, 3) positions in nm with every chain whole (its centre of geometry inside the box), the box
    as a (3, 3) float64 array of cell vectors (rows, nm), and the :func:`trappe_system` System.
    """
    num_chains = _check_positive_int(num_chains, "num_chains", 1)
    if isinstance(chain_length, bool) or not isinstance(chain_length, (int, np.integer)) or chain_length < 2:
        raise ValueError(f"chain_length must be a whole number of UA sites >= 2 (ethane), got {chain_length!r}")
    chain_length = int(chain_length)
    try:
        temperature = float(temperature_K)
    except (TypeError, ValueError):
        temperature = float("nan")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature_K must be a positive temperature in K (a number), got {temperature_K!r}")
    if density_g_cm3 is None:
        density = estimate_melt_density_g_cm3(chain_length, temperature)
    else:
        density = float(density_g_cm3)
        low, high = DENSITY_RANGE_G_CM3
        if not (low <= density <= high):
            raise ValueError(
                f"density_g_cm3={density_g_cm3!r} is outside the plausible range [{low}, {high}] g/cm³ for a "
                "liquid alkane / PE melt (e.g. 0.77 for n-hexadecane at 298 K, ~0.76 for PE at 450 K); "
                "give the density in g/cm³ (not kg/m³), or None for an estimate"
            )
    try:
        openmm_platform = openmm.Platform.getPlatformByName(platform)
    except Exception as error:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise ValueError(f"unknown OpenMM platform {platform!r}; available: {names}") from error

    mass = num_chains * chain_mass_amu(chain_length)
    edge = (mass * AMU_PER_NM3_TO_G_PER_CM3 / density) ** (1.0 / 3.0)
    box = np.eye(3) * edge
    topology = polyethylene_topology(num_chains, chain_length)
    topology.setPeriodicBoxVectors([Vec3(*row) for row in box] * unit.nanometer)
    system = trappe_system(topology, box, cutoff_nm=cutoff_nm, bond_k=bond_k)  # validates the cutoff

    positions = _pack_chains(num_chains, chain_length, edge, temperature, np.random.default_rng(seed))
    if minimize:
        positions, _, _ = _minimize(_soft_core_system(system), positions, openmm_platform, SOFT_CORE_ALPHAS)
        positions, energy, forces = _minimize(system, positions, openmm_platform)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise RuntimeError(
                f"the minimised melt has non-finite energy or forces (seed={seed}, density {density:.3f} g/cm³); "
                "try another seed or a lower density_g_cm3"
            )
        for chain in range(num_chains):
            sl = slice(chain * chain_length, (chain + 1) * chain_length)
            positions[sl] -= edge * np.floor(positions[sl].mean(axis=0) / edge)
    return topology, positions, box, system
