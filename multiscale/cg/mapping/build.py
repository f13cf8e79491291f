"""Build a :class:`~multiscale.cg.mapping.bead_mapping.Mapping` from a topology and a mapping
definition (:func:`build_mapping`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from multiscale.cg.forcemap import (
    default_force_map,
)
from multiscale.cg.mapping.bead_mapping import Mapping, _Bead, _without
from multiscale.cg.mapping.definition import (
    MappingDefinition,
    MappingError,
)
from multiscale.cg.mapping.system_data import _as_openmm_topology, _atom_label, _residue_label, constraints_of, masses_of, plain


def _components(n: int, edges: Iterable[Tuple[int, int]]) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    edges = list(edges)
    if not edges:
        return np.arange(n)
    i, j = np.array(edges).T
    return connected_components(sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)[1]


class _Labels:
    """Lazy list of labels for error messages (built only when one is needed)."""

    def __init__(self, make):
        self._make = make

    def __getitem__(self, k: int) -> str:
        return self._make(int(k))


def _overlap_matcher(allowed_overlaps):
    indices, names = set(), set()
    for entry in allowed_overlaps or ():
        if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            indices.add(int(entry))
        elif isinstance(entry, str) and entry.count(":") == 1:
            names.add(tuple(entry.split(":")))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            names.add((str(entry[0]), str(entry[1])))
        else:
            raise ValueError(f"allowed_overlaps entry {entry!r}: give an atom index, 'RESNAME:ATOMNAME' or (resname, atomname)")
    return lambda atom: atom.index in indices or (atom.residue.name, atom.name) in names


def build_mapping(
    topology,
    definition: Union[MappingDefinition, Dict[str, Any], str, Path],
    *,
    constraints=None,
    masses=None,
    allow_unmapped: bool = False,
    allowed_overlaps=None,
) -> Mapping:
    """Apply a mapping definition to a topology.

    Parameters
    ----------
    topology: ``openmm.app.Topology`` or ``mdtraj.Topology`` (converted with ``to_openmm()``).
    definition: :class:`MappingDefinition`, a dict of its options, or a YAML file path.
    constraints: constrained atom pairs, e.g. ``constraints_of(system)``, or the ``openmm.System``
        itself; the force map is then made to cancel the constraint forces that getForces() omits
        (or the mapping is refused with the reason when that is impossible).
    masses: (N,) atom masses in amu, or an ``openmm.System`` to take them from; default from the elements, with
        atoms without element (virtual sites, e.g. TIP4P's M) massless. Massless particles get
        weight 0 in M_x ("geometry" averages over the bead's massive atoms; explicit weights on
        them must be 0) and in M_f (their reported force is already on their parent atoms).
    allow_unmapped: leave atoms (and residues no rule claims, e.g. solvent) out of every bead
        instead of refusing; their forces are then ignored by the force map.
    allowed_overlaps: atoms that may belong to several beads, as atom indices,
        'RESNAME:ATOMNAME' strings or (resname, atomname) pairs. A shared atom counts with its full
        weight in each bead's coordinate and with 1/(number of its beads) of its mass in the bead
        masses; the force map is then the constraint-aware least-change map.
    """
    top = _as_openmm_topology(topology)
    if isinstance(definition, (str, Path)):
        definition = MappingDefinition.from_yaml(definition)
    elif isinstance(definition, dict):
        definition = MappingDefinition.from_dict(definition.get(MappingDefinition.SECTION, definition))
    elif not isinstance(definition, MappingDefinition):
        raise TypeError(f"definition must be a MappingDefinition, dict or YAML path, got {type(definition).__name__}")

    atoms = list(top.atoms())
    residues = list(top.residues())
    n_atoms = len(atoms)
    if hasattr(constraints, "getNumConstraints"):
        constraints = constraints_of(constraints)
    if hasattr(masses, "getParticleMass"):
        masses = masses_of(masses)
    if masses is None:
        mass = np.array([0.0 if a.element is None else float(plain(a.element.mass, "dalton")) for a in atoms])
    else:
        mass = np.asarray(masses, dtype=np.float64)
        if mass.shape != (n_atoms,) or not np.all(np.isfinite(mass)) or (mass < 0).any():
            raise ValueError(f"masses must be {n_atoms} non-negative finite values in amu, got shape {mass.shape}")
    atom_bonds = [(a.index, b.index) for a, b in top.bonds()]
    residue_bonds = {(min(a.residue.index, b.residue.index), max(a.residue.index, b.residue.index))
                     for a, b in top.bonds() if a.residue.index != b.residue.index}

    rule_of: Dict[str, Tuple[str, Any]] = {name: ("template", t) for name, t in definition.residues.items()}
    for rule in definition.polymers:
        rule_of.update({name: ("polymer", rule) for name in rule.residues})
    for rule in definition.molecules:
        rule_of.update({name: ("molecule", rule) for name in rule.residues})
    missing = [r for r in residues if r.name not in rule_of]
    if missing and not allow_unmapped:
        names = sorted({r.name for r in missing})
        raise MappingError(
            f"{_residue_label(missing[0])} has no template or rule ({len(missing)} residue(s) named {names} have none); "
            f"add a residue template, polymer or molecule rule for {names}, or pass allow_unmapped=True to leave them out"
        )

    beads: List[_Bead] = []

    def grouped(rule) -> List[List[int]]:
        """Residues of ``rule`` grouped into covalently connected sets (sorted by index)."""
        members = [r.index for r in residues if rule_of.get(r.name, (None, None))[1] is rule]
        local = {r: k for k, r in enumerate(members)}
        labels = _components(len(members), [(local[a], local[b]) for a, b in residue_bonds if a in local and b in local])
        groups: Dict[int, List[int]] = {}
        for r, lab in zip(members, labels):
            groups.setdefault(int(lab), []).append(r)
        return list(groups.values())

    def residue_atoms(indices: Sequence[int]) -> List[int]:
        return [a.index for r in indices for a in residues[r].atoms()]

    for rule in definition.polymers:
        k = rule.monomers_per_bead
        for chain in grouped(rule):
            for a, b in zip(chain, chain[1:]):
                if (a, b) not in residue_bonds:
                    raise MappingError(
                        f"polymer chain {[residues[r].name + residues[r].id for r in chain][:6]}...: {_residue_label(residues[a])} "
                        f"is not bonded to the next residue {_residue_label(residues[b])}; the polymer rule needs a linear "
                        "chain in topology order (renumber the residues along the chain)"
                    )
            n_res, remainder = len(chain), len(chain) % k
            if remainder and not rule.allow_remainder:
                raise MappingError(
                    f"polymer chain starting at {_residue_label(residues[chain[0]])} has {n_res} monomers, not a multiple "
                    f"of monomers_per_bead={k} (remainder {remainder}); set allow_remainder: true to make the last bead "
                    f"hold {remainder} monomer(s), or choose monomers_per_bead dividing {n_res}. (If these residues "
                    "belong to longer chains, the Topology lacks the bonds between them.)"
                )
            runs = [chain[s:s + k] for s in range(0, n_res, k)]
            for pos, run in enumerate(runs):
                end = pos == 0 or pos == len(runs) - 1
                bead_type = rule.end_bead_type if end and rule.end_bead_type else rule.bead_type
                if pos == len(runs) - 1 and len(run) < k and rule.remainder_bead_type:
                    bead_type = rule.remainder_bead_type
                beads.append(_Bead(rule.bead_name or bead_type, bead_type, residue_atoms(run), rule.weights,
                                   f"polymer bead {pos} of the chain at {_residue_label(residues[run[0]])}", list(run)))

    for rule in definition.molecules:
        groups = grouped(rule) if rule.per == "molecule" else [[r.index] for r in residues if rule_of.get(r.name, (None, None))[1] is rule]
        for group in groups:
            beads.append(_Bead(rule.bead_name or rule.bead_type, rule.bead_type, residue_atoms(group), rule.weights,
                               f"molecule bead of {_residue_label(residues[group[0]])}", list(group)))

    template_beads: Dict[int, Dict[str, int]] = {}
    for res in residues:
        kind, template = rule_of.get(res.name, (None, None))
        if kind != "template":
            continue
        by_name: Dict[str, List[int]] = {}
        for atom in res.atoms():
            by_name.setdefault(atom.name, []).append(atom.index)
        for bead in template.beads:
            indices = []
            for name in bead.atoms:
                found = by_name.get(name, [])
                if not found:
                    raise MappingError(
                        f"template {res.name!r} bead {bead.name!r} lists atom {name!r}, which {_residue_label(res)} lacks "
                        f"(it has {sorted(by_name)}); fix the atom name in the template or the topology"
                    )
                if len(found) > 1:
                    raise MappingError(f"{_residue_label(res)} has {len(found)} atoms named {name!r}; atom names must be unique within a residue for templates")
                indices.append(found[0])
            template_beads.setdefault(res.index, {})[bead.name] = len(beads)
            beads.append(_Bead(bead.name, bead.type, indices, bead.weights, f"bead {bead.name!r} of {_residue_label(res)}", [res.index]))

    # ---- per-residue bead lookup and bead bonds
    beads_of_residue: Dict[int, Dict[str, int]] = {}
    for k, bead in enumerate(beads):
        for r in bead.residues:
            beads_of_residue.setdefault(r, {}).setdefault(bead.name, k)
    bonds = set()
    for k in range(len(beads) - 1):  # consecutive beads of one polymer chain
        a, b = beads[k], beads[k + 1]
        ra, rb = a.residues[-1], b.residues[0]
        kind_a = rule_of.get(residues[ra].name, (None, None))
        kind_b = rule_of.get(residues[rb].name, (None, None))
        if kind_a[0] == "polymer" and kind_a[1] is kind_b[1] and (ra, rb) in residue_bonds:
            bonds.add((k, k + 1))
    for res in residues:
        kind, template = rule_of.get(res.name, (None, None))
        if kind != "template":
            continue
        own = template_beads.get(res.index, {})
        for x, y in template.bonds:
            bonds.add((own[x], own[y]))
        if template.bonds_to_next:
            chain_res = list(res.chain.residues())
            pos = next(p for p, r in enumerate(chain_res) if r is res)
            if pos + 1 < len(chain_res):
                nxt = chain_res[pos + 1]
                if (res.index, nxt.index) in residue_bonds:
                    available = beads_of_residue.get(nxt.index, {})
                    for x, y in template.bonds_to_next:
                        if y not in available:
                            raise MappingError(
                                f"template {res.name!r} bonds_to_next [{x}, {y}]: the next residue {_residue_label(nxt)} "
                                f"has no bead named {y!r} (its beads: {sorted(available)}); fix the bead name"
                            )
                        bonds.add((own[x], available[y]))

    # ---- validation over all beads
    owners: List[List[int]] = [[] for _ in range(n_atoms)]
    for k, bead in enumerate(beads):
        if not bead.atoms:
            raise MappingError(f"{bead.origin} (type {bead.type}) is empty: its residue(s) have no atoms; remove the residue or the rule")
        for a in bead.atoms:
            owners[a].append(k)
    allowed = _overlap_matcher(allowed_overlaps)
    for atom, holders in zip(atoms, owners):
        if len(holders) > 1 and not allowed(atom):
            raise MappingError(
                f"{_atom_label(atom)} is in {len(holders)} beads ({', '.join(beads[h].origin for h in holders)}); "
                f"remove it from all but one, or declare the overlap with allowed_overlaps=['{atom.residue.name}:{atom.name}'] "
                f"(or its index {atom.index})"
            )
    unmapped = [a for a, holders in zip(atoms, owners) if not holders]
    if unmapped and not allow_unmapped:
        raise MappingError(
            f"{len(unmapped)} atom(s) are in no bead, first {_atom_label(unmapped[0])}"
            + (f" (also {', '.join(repr(a.residue.name + ':' + a.name) for a in unmapped[1:4])})" if len(unmapped) > 1 else "")
            + "; add them to a bead of the residue template, or pass allow_unmapped=True to leave them out on purpose"
        )
    for bead in beads:
        if not any(len(owners[a]) == 1 for a in bead.atoms):
            raise MappingError(
                f"{bead.origin} has no atom of its own: all its atoms {[atoms[a].name for a in bead.atoms]} are shared with other "
                "beads. Each bead needs at least one atom that belongs to it alone (otherwise M_f M_xᵀ = I has no solution); "
                "give it an unshared atom or merge it with the bead it overlaps"
            )

    # ---- coordinate map rows and masses
    rows, cols, vals, bead_mass = [], [], [], []
    for k, bead in enumerate(beads):
        idx = np.array(bead.atoms)
        massive = mass[idx] > 0
        if not massive.any():
            raise MappingError(
                f"{bead.origin} holds only massless particles {[atoms[a].name for a in idx]} (atoms without element count as "
                "massless virtual sites); pass masses=masses_of(system) for a topology without elements, or add real atoms to the bead"
            )
        if isinstance(bead.weights, list):
            w = np.array(bead.weights)
            bad = idx[(~massive) & (w > 0)]
            if bad.size:
                raise MappingError(
                    f"{bead.origin} gives weight to the massless particle {_atom_label(atoms[bad[0]])}: a virtual site is not "
                    "an independent degree of freedom; give it weight 0"
                )
        elif bead.weights == "geometry":
            w = massive / massive.sum()
        else:
            w = mass[idx] / mass[idx].sum()
        rows.extend([k] * len(idx))
        cols.extend(idx.tolist())
        vals.extend(w.tolist())
        bead_mass.append(float(sum(mass[a] / len(owners[a]) for a in idx)))

    # ---- chains: molecules joined by covalent bonds or shared beads; renumber beads chain by chain
    n_beads = len(beads)
    edges = list(atom_bonds)
    for bead in beads:
        edges.extend((bead.atoms[0], a) for a in bead.atoms[1:])
    molecule = _components(n_atoms, edges)
    bead_molecule = [int(molecule[b.atoms[0]]) for b in beads]
    first_atom = {}
    for k, m in enumerate(bead_molecule):
        first_atom[m] = min(first_atom.get(m, n_atoms), min(beads[k].atoms))
    order = sorted(range(n_beads), key=lambda k: (first_atom[bead_molecule[k]], beads[k].residues[0], k))
    new_index = {old: new for new, old in enumerate(order)}
    chains: List[List[int]] = []
    last = None
    for old in order:
        if bead_molecule[old] != last:
            chains.append([])
            last = bead_molecule[old]
        chains[-1].append(new_index[old])
    m_x = sp.csr_matrix((vals, ([new_index[r] for r in rows], cols)), shape=(n_beads, n_atoms))
    constraint_pairs = [tuple(int(x) for x in c[:2]) for c in (constraints or [])]
    for i, j in constraint_pairs:
        if not (0 <= i < n_atoms and 0 <= j < n_atoms):
            raise MappingError(f"constraint ({i}, {j}) names an atom outside the topology's 0..{n_atoms - 1}; pass constraints of this topology's System")
    atom_indices = [beads[k].atoms for k in order]
    massless = [a for a in range(n_atoms) if not mass[a] > 0]
    force_map, kind = default_force_map(
        m_x, _without(atom_indices, massless), constraint_pairs,
        atom_labels=_Labels(lambda a: _atom_label(atoms[a])),
        bead_labels=_Labels(lambda k: f"{beads[order[k]].origin} (type {beads[order[k]].type})"),
    )
    return Mapping(
        m_x,
        force_map,
        bead_names=[beads[k].name for k in order],
        bead_types=[beads[k].type for k in order],
        bead_masses=[bead_mass[k] for k in order],
        atom_indices=atom_indices,
        bead_bonds=[(new_index[a], new_index[b]) for a, b in bonds],
        chains=chains,
        atom_bonds=atom_bonds,
        constraints=constraint_pairs,
        massless=massless,
        box=None if top.getPeriodicBoxVectors() is None else plain(top.getPeriodicBoxVectors(), "nanometers"),
        force_map_kind=kind,
    )

