"""Samples of the CG geometry grouped by canonical type tuple (:class:`PriorSamples`), the
input of every prior fit. Units: nm, rad."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from multiscale.cg.geometry import (
    _as_frames,
    _as_index,
    bond_angles,
    bond_lengths,
    dihedral_angles,
)
from multiscale.cg.priors.config import PriorConfig
from multiscale.cg.priors.contacts import _type_codes, contact_distances, nonbonded_type_pairs
from multiscale.cg.priors.records import TypeKey, canonical_key

# ----------------------------------------------------------------------------------------------
# samples per type
# ----------------------------------------------------------------------------------------------


@dataclass
class PriorSamples:
    """Samples per canonical type tuple: bonds (nm), angles (rad), dihedrals (rad), contacts (nm).

    ``nonbonded_counts``: number of non-excluded bead pairs per type pair (pairs that need a
    repulsive prior); ``exclusion`` and ``cutoff_nm`` (nm) record how contacts were collected.
    """

    bonds: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    angles: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    dihedrals: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    contacts: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    nonbonded_counts: Dict[TypeKey, int] = field(default_factory=dict)
    exclusion: str = "1-3"
    cutoff_nm: float = 1.0


def _group(values: np.ndarray, index: np.ndarray, names: List[str]) -> Dict[TypeKey, np.ndarray]:
    groups: Dict[TypeKey, List[int]] = defaultdict(list)
    for m, row in enumerate(index.tolist()):
        groups[canonical_key([names[i] for i in row])].append(m)
    return {k: values[:, cols].ravel() for k, cols in groups.items()}


def collect_samples(
    positions: np.ndarray,
    bead_types: Sequence[str],
    bonds: Any,
    angles: Any = (),
    dihedrals: Any = (),
    *,
    boxes: Optional[np.ndarray] = None,
    config: Optional[PriorConfig] = None,
) -> PriorSamples:
    """Measure bonds, angles, dihedrals (if ``config.use_dihedrals``) and contacts (if
    ``config.use_repulsive``) of a CG trajectory and group them by canonical type tuple."""
    config = config or PriorConfig()
    x = _as_frames(positions)
    names = [str(t) for t in bead_types]
    _type_codes(names, x.shape[1])
    bond_idx = _as_index(bonds, 2, "bonds", x.shape[1])
    angle_idx = _as_index(angles, 3, "angles", x.shape[1])
    dihedral_idx = _as_index(dihedrals, 4, "dihedrals", x.shape[1])
    samples = PriorSamples(exclusion=config.exclusion, cutoff_nm=config.nonbonded_cutoff_nm)
    samples.bonds = _group(bond_lengths(x, bond_idx, boxes), bond_idx, names)
    samples.angles = _group(bond_angles(x, angle_idx, boxes), angle_idx, names)
    if config.use_dihedrals:
        samples.dihedrals = _group(dihedral_angles(x, dihedral_idx, boxes), dihedral_idx, names)
    if config.use_repulsive:
        samples.nonbonded_counts = nonbonded_type_pairs(names, bond_idx, config.exclusion)
        if samples.nonbonded_counts:
            samples.contacts = contact_distances(
                x, names, bond_idx, boxes, exclusion=config.exclusion, cutoff_nm=config.nonbonded_cutoff_nm
            )
    return samples


