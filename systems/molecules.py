"""Small organic molecules for sampling by classical MD: alanine dipeptide (ACE-ALA-NME).

Why alanine dipeptide, typed by the AMBER ff14SB force field that ships with OpenMM
(``amber14-all.xml``), rather than a hand-parametrised molecule such as ethanol: the sampling force
field is then a published, validated one (bonds, angles, torsions with their CMAP-free ff14SB
backbone corrections, 1-4 scaled nonbonded terms), not force constants we would have to invent,
and the molecule is the standard small test case of biomolecular ML potentials (22 atoms,
elements H, C, N, O, two soft backbone torsions φ/ψ). OpenMM has no sequence builder, so the
coordinates are built here from a z-matrix (internal coordinates), checked by the tests: every
bond length equals the force field's equilibrium length, the Cα is L (S) configured,
``ForceField.createSystem`` recognises all three residues, and MD at 400 K keeps the molecule intact.

The MD force field only *samples* configurations; the reference labels of the benchmarks come
from GFN2-xTB (``multiscale.labels.xtb``). Both are gas phase: the System has no solvent and no
cutoff (``NoCutoff``), and no constraints, so it can be integrated with 0.5 fs steps at
300–500 K.

Geometry source
---------------
All bond lengths and the bond angles used in the z-matrix are the equilibrium values (``length``
and ``angle`` of the ``<HarmonicBondForce>`` / ``<HarmonicAngleForce>`` entries) of AMBER ff14SB
as distributed with OpenMM in ``openmm/app/data/amber14/protein.ff14SB.xml`` (these are the
parm99/parm10 values of Cornell et al., J. Am. Chem. Soc. 117, 5179 (1995), kept in ff14SB,
Maier et al., J. Chem. Theory Comput. 11, 3696 (2015)); AMBER atom types in brackets:

=====================================  ==========  ========================================
bond                                   length (Å)  types
=====================================  ==========  ========================================
C–H (methyl H, Hα)                     1.090       CT–HC, CX–H1, CT–H1
C(methyl)–C(carbonyl)                  1.522       CT–C
Cα–C(carbonyl)                         1.522       CX–C
Cα–Cβ                                  1.526       CX–CT
C=O                                    1.229       C–O
C–N (peptide)                          1.335       C–N
N–Cα, N–C(methyl)                      1.449       N–CX, N–CT
N–H                                    1.010       N–H
=====================================  ==========  ========================================

angles (degrees): C(α/methyl)–C–N 116.6, C(α/methyl)–C=O 120.4, C–N–Cα/C(methyl) 121.9,
C–N–H 120.0, N–Cα–C 110.1, N–Cα–Cβ 109.7, every angle with an H on an sp³ carbon 109.5.
The remaining angles follow from the dihedrals: trans peptide bonds (ω = 180°), the carbonyl O
and the amide H anti to each other (planar amides), staggered methyl groups, and the backbone
dihedrals φ (C–N–Cα–C) and ψ (N–Cα–C–N) given to the builder. Because the z-matrix fixes only
three of the angles around each sp² or sp³ centre, the others come out within a few degrees of
their equilibrium values; minimise the energy before dynamics if that matters.

Units: positions in nm (OpenMM), angles in degrees at the interface of this module.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import openmm
from openmm import app

#: equilibrium bond lengths in nm (AMBER ff14SB, see the module docstring), by AMBER type pair
BOND_LENGTHS_NM: Dict[str, float] = {
    "CT-HC": 0.1090,
    "CX-H1": 0.1090,
    "CT-H1": 0.1090,
    "CT-C": 0.1522,
    "CX-C": 0.1522,
    "CX-CT": 0.1526,
    "C-O": 0.1229,
    "C-N": 0.1335,
    "N-CX": 0.1449,
    "N-CT": 0.1449,
    "N-H": 0.1010,
}

#: equilibrium angles in degrees (AMBER ff14SB) used by the z-matrix
ANGLES_DEG: Dict[str, float] = {
    "CT-C-N": 116.6,
    "CT-C-O": 120.4,
    "CX-C-N": 116.6,
    "CX-C-O": 120.4,
    "C-N-CX": 121.9,
    "C-N-CT": 121.9,
    "C-N-H": 120.0,
    "N-CX-C": 110.1,
    "N-CX-CT": 109.7,
    "tetrahedral": 109.5,
}

#: default backbone dihedrals (degrees): the C7eq basin, the gas-phase minimum of alanine dipeptide
C7EQ_PHI_PSI_DEG = (-83.0, 73.0)

# One row per atom, in output (PDB) order:
#   (residue index, atom name, element, AMBER type, bonded-to, angle-ref, dihedral-ref,
#    bond key, angle key or value, dihedral in degrees or "phi"/"psi"/"phi+120"/"phi-120")
# Atom references are (residue index, name). Rows are *placed* in BUILD_ORDER, which only refers
# to atoms already placed.
_RESIDUES = ("ACE", "ALA", "NME")
_ATOMS: List[Tuple] = [
    (0, "HH31", "H", "HC", (0, "CH3"), (0, "C"), (0, "O"), "CT-HC", "tetrahedral", 0.0),
    (0, "CH3", "C", "CT", None, None, None, None, None, None),
    (0, "HH32", "H", "HC", (0, "CH3"), (0, "C"), (0, "O"), "CT-HC", "tetrahedral", 120.0),
    (0, "HH33", "H", "HC", (0, "CH3"), (0, "C"), (0, "O"), "CT-HC", "tetrahedral", -120.0),
    (0, "C", "C", "C", (0, "CH3"), None, None, "CT-C", None, None),
    (0, "O", "O", "O", (0, "C"), (0, "CH3"), (1, "N"), "C-O", "CT-C-O", 180.0),
    (1, "N", "N", "N", (0, "C"), (0, "CH3"), None, "C-N", "CT-C-N", None),
    (1, "H", "H", "H", (1, "N"), (0, "C"), (0, "O"), "N-H", "C-N-H", 180.0),
    (1, "CA", "C", "CX", (1, "N"), (0, "C"), (0, "CH3"), "N-CX", "C-N-CX", 180.0),
    (1, "HA", "H", "H1", (1, "CA"), (1, "N"), (0, "C"), "CX-H1", "tetrahedral", "phi+120"),
    (1, "CB", "C", "CT", (1, "CA"), (1, "N"), (0, "C"), "CX-CT", "N-CX-CT", "phi-120"),
    (1, "HB1", "H", "HC", (1, "CB"), (1, "CA"), (1, "N"), "CT-HC", "tetrahedral", 60.0),
    (1, "HB2", "H", "HC", (1, "CB"), (1, "CA"), (1, "N"), "CT-HC", "tetrahedral", 180.0),
    (1, "HB3", "H", "HC", (1, "CB"), (1, "CA"), (1, "N"), "CT-HC", "tetrahedral", -60.0),
    (1, "C", "C", "C", (1, "CA"), (1, "N"), (0, "C"), "CX-C", "N-CX-C", "phi"),
    (1, "O", "O", "O", (1, "C"), (1, "CA"), (2, "N"), "C-O", "CX-C-O", 180.0),
    (2, "N", "N", "N", (1, "C"), (1, "CA"), (1, "N"), "C-N", "CX-C-N", "psi"),
    (2, "H", "H", "H", (2, "N"), (1, "C"), (1, "O"), "N-H", "C-N-H", 180.0),
    (2, "CH3", "C", "CT", (2, "N"), (1, "C"), (1, "CA"), "N-CT", "C-N-CT", 180.0),
    (2, "HH31", "H", "H1", (2, "CH3"), (2, "N"), (1, "C"), "CT-H1", "tetrahedral", 180.0),
    (2, "HH32", "H", "H1", (2, "CH3"), (2, "N"), (1, "C"), "CT-H1", "tetrahedral", 60.0),
    (2, "HH33", "H", "H1", (2, "CH3"), (2, "N"), (1, "C"), "CT-H1", "tetrahedral", -60.0),
]
_BUILD_ORDER = [
    (0, "CH3"), (0, "C"), (1, "N"), (0, "O"), (0, "HH31"), (0, "HH32"), (0, "HH33"),
    (1, "CA"), (1, "H"), (1, "C"), (1, "CB"), (1, "HA"), (1, "HB1"), (1, "HB2"), (1, "HB3"),
    (2, "N"), (1, "O"), (2, "CH3"), (2, "H"), (2, "HH31"), (2, "HH32"), (2, "HH33"),
]
_BONDS = [((0, "CH3"), (0, n)) for n in ("HH31", "HH32", "HH33", "C")] + [
    ((0, "C"), (0, "O")), ((0, "C"), (1, "N")),
    ((1, "N"), (1, "H")), ((1, "N"), (1, "CA")), ((1, "CA"), (1, "HA")), ((1, "CA"), (1, "CB")),
    ((1, "CB"), (1, "HB1")), ((1, "CB"), (1, "HB2")), ((1, "CB"), (1, "HB3")),
    ((1, "CA"), (1, "C")), ((1, "C"), (1, "O")), ((1, "C"), (2, "N")),
    ((2, "N"), (2, "H")), ((2, "N"), (2, "CH3")),
] + [((2, "CH3"), (2, n)) for n in ("HH31", "HH32", "HH33")]


def place_atom(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle_deg: float, dihedral_deg: float) -> np.ndarray:
    """Position of atom d with |cd| = ``bond``, angle b–c–d = ``angle_deg`` and dihedral
    a–b–c–d = ``dihedral_deg`` (IUPAC sign convention), by the natural-extension-reference-frame
    construction (Parsons et al., J. Comput. Chem. 26, 1063 (2005))."""
    theta, phi = np.radians(angle_deg), np.radians(dihedral_deg)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    norm = np.linalg.norm(n)
    if norm < 1e-12:
        raise ValueError("place_atom: reference atoms a, b, c are collinear; the dihedral is undefined")
    n /= norm
    m = np.cross(n, bc)
    local = bond * np.array([-np.cos(theta), np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)])
    return c + local[0] * bc + local[1] * m + local[2] * n


def dihedral_deg(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> float:
    """Dihedral angle a–b–c–d in degrees, in (−180, 180] (IUPAC sign convention)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


def _dihedral_value(spec, phi: float, psi: float) -> float:
    if isinstance(spec, str):
        return {"phi": phi, "psi": psi, "phi+120": phi + 120.0, "phi-120": phi - 120.0}[spec]
    return float(spec)


def alanine_dipeptide(phi_deg: float = C7EQ_PHI_PSI_DEG[0], psi_deg: float = C7EQ_PHI_PSI_DEG[1]) -> Tuple[app.Topology, np.ndarray]:
    """ACE-ALA-NME (22 atoms) with L-alanine, trans peptide bonds and backbone dihedrals
    φ = ``phi_deg``, ψ = ``psi_deg`` (default: the C7eq basin), built from the ff14SB equilibrium
    geometry (module docstring). Atom and residue names follow the AMBER templates, so
    ``app.ForceField("amber14-all.xml")`` types it directly.

    Returns (topology, positions in nm, centred on the origin). No periodic box.
    """
    for name, value in (("phi_deg", phi_deg), ("psi_deg", psi_deg)):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be a finite angle in degrees, got {value!r}")
    rows = {(row[0], row[1]): row for row in _ATOMS}
    placed: Dict[Tuple[int, str], np.ndarray] = {}
    for key in _BUILD_ORDER:
        _, _, _, _, bonded, angle_ref, dihedral_ref, bond_key, angle_key, dihedral = rows[key]
        if bonded is None:  # first atom
            placed[key] = np.zeros(3)
        elif angle_ref is None:  # second atom, on the x axis
            placed[key] = placed[bonded] + np.array([BOND_LENGTHS_NM[bond_key], 0.0, 0.0])
        elif dihedral_ref is None:  # third atom, in the xy plane
            placed[key] = place_atom(
                placed[bonded] + np.array([0.0, 1.0, 0.0]), placed[angle_ref], placed[bonded],
                BOND_LENGTHS_NM[bond_key], ANGLES_DEG[angle_key], 180.0,
            )
        else:
            placed[key] = place_atom(
                placed[dihedral_ref], placed[angle_ref], placed[bonded],
                BOND_LENGTHS_NM[bond_key], ANGLES_DEG[angle_key], _dihedral_value(dihedral, phi_deg, psi_deg),
            )

    topology = app.Topology()
    chain = topology.addChain()
    residues = [topology.addResidue(name, chain) for name in _RESIDUES]
    atoms = {}
    for residue_index, name, element, *_ in _ATOMS:
        atoms[(residue_index, name)] = topology.addAtom(name, app.Element.getBySymbol(element), residues[residue_index])
    for first, second in _BONDS:
        topology.addBond(atoms[first], atoms[second])
    positions = np.array([placed[(row[0], row[1])] for row in _ATOMS])
    return topology, positions - positions.mean(axis=0)


def bond_types(topology: app.Topology) -> List[str]:
    """The ``BOND_LENGTHS_NM`` key of every bond of an :func:`alanine_dipeptide` topology, in
    ``topology.bonds()`` order."""
    amber = {(row[0], row[1]): row[3] for row in _ATOMS}
    keys = []
    for bond in topology.bonds():
        pair = [amber[(atom.residue.index, atom.name)] for atom in (bond.atom1, bond.atom2)]
        key = next((k for k in ("-".join(pair), "-".join(pair[::-1])) if k in BOND_LENGTHS_NM), None)
        if key is None:
            raise ValueError(f"no equilibrium length for bond {bond.atom1.name}-{bond.atom2.name} (types {pair})")
        keys.append(key)
    return keys


def backbone_dihedrals(topology: app.Topology, positions: np.ndarray) -> Tuple[float, float]:
    """(φ, ψ) of the alanine residue in degrees: φ = C(ACE)–N–Cα–C, ψ = N–Cα–C–N(NME)."""
    index = {(atom.residue.index, atom.name): atom.index for atom in topology.atoms()}
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    c0, n1, ca, c1, n2 = (x[index[k]] for k in ((0, "C"), (1, "N"), (1, "CA"), (1, "C"), (2, "N")))
    return dihedral_deg(c0, n1, ca, c1), dihedral_deg(n1, ca, c1, n2)


def chirality_volume(topology: app.Topology, positions: np.ndarray) -> float:
    """(N − Cα) · [(C − Cα) × (Cβ − Cα)] in nm³: positive for L-alanine (S at Cα), negative for D."""
    index = {(atom.residue.index, atom.name): atom.index for atom in topology.atoms()}
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    ca = x[index[(1, "CA")]]
    n, c, cb = (x[index[(1, name)]] - ca for name in ("N", "C", "CB"))
    return float(np.dot(n, np.cross(c, cb)))


def alanine_dipeptide_system(topology: app.Topology) -> openmm.System:
    """AMBER ff14SB (``amber14-all.xml``) in the gas phase for a sampling run: no cutoff, no
    constraints (flexible X–H bonds; integrate with ~0.5 fs), centre-of-mass motion removed.

    A *sampling* force field: the benchmark labels come from GFN2-xTB, not from this System.
    """
    if topology.getPeriodicBoxVectors() is not None:
        raise ValueError("alanine_dipeptide_system is a gas-phase (non-periodic) System; pass the topology "
                         "from alanine_dipeptide(), which has no periodic box")
    forcefield = app.ForceField("amber14-all.xml")
    try:
        return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    except ValueError as error:
        raise ValueError(
            f"amber14-all.xml could not type the topology ({error}); build it with alanine_dipeptide(), "
            "whose residues are ACE, ALA, NME with AMBER atom names and all bonds"
        ) from error


def bonded_pairs(topology: app.Topology) -> np.ndarray:
    """(n_bonds, 2) atom indices of the topology's bonds."""
    return np.array([[bond.atom1.index, bond.atom2.index] for bond in topology.bonds()], dtype=np.int64)


def bonds_intact(topology: app.Topology, positions: np.ndarray, reference: np.ndarray, tolerance: float = 0.2) -> bool:
    """True when every bonded distance in ``positions`` is within ``tolerance`` (relative) of the
    same distance in ``reference`` (both (N, 3) in nm)."""
    pairs = bonded_pairs(topology)
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
    now = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    before = np.linalg.norm(ref[pairs[:, 0]] - ref[pairs[:, 1]], axis=1)
    return bool(np.all(np.abs(now / before - 1.0) <= tolerance))


__all__: Sequence[str] = [
    "BOND_LENGTHS_NM",
    "ANGLES_DEG",
    "C7EQ_PHI_PSI_DEG",
    "alanine_dipeptide",
    "alanine_dipeptide_system",
    "backbone_dihedrals",
    "chirality_volume",
    "bond_types",
    "bonded_pairs",
    "bonds_intact",
    "place_atom",
    "dihedral_deg",
]
