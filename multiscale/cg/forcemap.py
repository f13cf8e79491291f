"""Force maps for coarse-graining by force matching: M_f with F_beads = M_f f_atoms.

Units: atomic forces in kJ/mol/nm, mapped (bead) forces in kJ/mol/nm; force-map weights are
dimensionless. Matrices are ``scipy.sparse`` CSR of shape (n_beads, n_atoms): a map of 10^5 atoms
onto 10^4 beads has a few 10^5 non-zeros, while a dense matrix would need ~8 GB.

Theory (Noid et al., J. Chem. Phys. 128, 244114 (2008); Krämer et al., J. Phys. Chem. Lett. 2023)
------------------------------------------------------------------------------------------------
With bead coordinates R = M_x r (each row of M_x sums to 1), any constant M_f with

    M_f M_xᵀ = I                                                         (1)

makes E[M_f f | R] the mean force −∇U_PMF(R), so E‖M_f f − F_θ(R)‖² is minimised by the PMF.

* **Plain sum** (:func:`basic_force_map`): M_f[I, i] = 1 for the atoms of bead I. For a map
  whose beads share no atom, (M_f M_xᵀ)[I, J] = Σ_{i∈I} M_x[J, i] = δ_IJ because row J of M_x
  lives on the atoms of bead J only and sums to 1, whatever its weights (mass, geometry, explicit).
  With shared atoms the off-diagonal sums are not zero and (1) fails.

* **Constraints.** OpenMM's ``State.getForces()`` omits the constraint forces. A constraint
  between atoms a and b adds g to f_a and −g to f_b (equal and opposite, along the bond), so it
  contributes (M_f[I, a] − M_f[I, b]) g to bead I. It cancels for every configuration iff

      M_f[I, a] = M_f[I, b]   for every bead I and every constrained pair (a, b).    (2)

  Within one bead the plain sum has 1 = 1; across a bead boundary (a ∈ I, b ∈ J) it has
  M_f[I, a] = 1 ≠ 0 = M_f[I, b], so the plain sum of getForces() is wrong there. Chaining (2)
  over constraints, each row of M_f is constant on every constraint group (connected component of
  the constraint graph). :func:`constraint_aware_force_map` looks, bead by bead, for the M_f
  closest to the plain sum (least change ‖M_f − M_sum‖, an equality-constrained least-squares
  problem solved through its KKT system) that satisfies (1) and (2) on a support made of the
  bead's atoms, their constraint groups and optionally atoms a few bonds away. When the plain
  sum is already valid it is returned unchanged. When no weights exist it refuses, naming the
  bead and the constraint group: e.g. a rigid water split into two beads has no valid constant
  force map (both rows would be constant on the molecule, and (1) would require that constant to
  be 1 and 0 at once: the constraints fix the bead–bead geometry, so there is no mean force
  to estimate along it).

* **Virtual sites.** OpenMM's ``getForces()`` reports a force on a virtual site (e.g. TIP4P's M)
  although it has already added that force to the parent atoms; a force map must give virtual
  sites weight 0. Pass the bead atoms without them (``Mapping.force_atoms`` does this).

* **Optimal map** (:func:`optimal_force_map`, Krämer et al. 2023): among all M_f satisfying (1)
  and (2) on a given support, pick the one minimising the mean-square mapped force over sampled
  atomistic forces, E‖M_f f‖². Since E‖M_f f‖² = E‖F_PMF(R)‖² + E‖M_f f − F_PMF(R)‖² and the first
  term is the same for every valid map, this minimises the noise of the force-matching target.
  Weights are isotropic (one scalar per atom and bead, applied to x, y and z), so the problem
  splits into one small quadratic program per bead: minimise wᵀ C w subject to linear equalities,
  C_ij = (1/T) Σ_t Σ_α f_tiα f_tjα.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from multiscale.cg.topology import BondGraph

__all__ = [
    "ForceMapError",
    "OptimalForceMap",
    "basic_force_map",
    "check_constraint_cancellation",
    "check_force_map",
    "constraint_aware_force_map",
    "constraint_groups",
    "crossing_constraints",
    "default_force_map",
    "optimal_force_map",
]


class ForceMapError(ValueError):
    """A force map that violates M_f M_xᵀ = I or the constraint equalities, or one that cannot exist."""


def _csr(matrix, name: str) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_beads, n_atoms) matrix")
    return out


def _normalise_pairs(pairs, n_atoms: int, what: str) -> List[Tuple[int, int]]:
    out = []
    for k, pair in enumerate(pairs or ()):
        try:
            i, j = (int(p) for p in pair)
        except (TypeError, ValueError):
            raise ValueError(f"{what} {k} is {pair!r}; expected a pair of atom indices (i, j)") from None
        if not (0 <= i < n_atoms and 0 <= j < n_atoms):
            raise ValueError(f"{what} {k} = ({i}, {j}) names an atom outside 0..{n_atoms - 1}")
        if i == j:
            raise ValueError(f"{what} {k} joins atom {i} to itself")
        out.append((min(i, j), max(i, j)))
    return sorted(set(out))


def _label(labels: Optional[Sequence[str]], k: int, kind: str) -> str:
    return labels[k] if labels is not None else f"{kind} {k}"


def basic_force_map(atom_indices: Sequence[Sequence[int]], n_atoms: int) -> sp.csr_matrix:
    """The plain-sum force map: M_f[I, i] = 1 for every atom i of bead I (bead force = sum of the
    atomic forces of its atoms, kJ/mol/nm). Valid (M_f M_xᵀ = I) for beads that share no atom and
    have no constraint across their boundary; see :func:`default_force_map`."""
    rows = np.concatenate([np.full(len(a), k) for k, a in enumerate(atom_indices)]) if len(atom_indices) else np.zeros(0, int)
    cols = np.concatenate([np.asarray(a, dtype=int) for a in atom_indices]) if len(atom_indices) else np.zeros(0, int)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(atom_indices), n_atoms))


def check_force_map(coordinate_map, force_map, atol: float = 1e-8) -> None:
    """Raise :class:`ForceMapError` unless M_f M_xᵀ = I within ``atol`` (max abs deviation).

    M_x and M_f are (n_beads, n_atoms) matrices (dense or sparse); the message names the worst
    bead pair and says what to do."""
    m_x, m_f = _csr(coordinate_map, "coordinate_map"), _csr(force_map, "force_map")
    if m_x.shape != m_f.shape:
        raise ForceMapError(f"force map has shape {m_f.shape} but the coordinate map has {m_x.shape}; both must be (n_beads, n_atoms)")
    diff = (m_f @ m_x.T - sp.identity(m_x.shape[0], format="csr")).tocoo()
    if diff.nnz == 0 or np.max(np.abs(diff.data)) <= atol:
        return
    k = int(np.argmax(np.abs(diff.data)))
    i, j, dev = int(diff.row[k]), int(diff.col[k]), float(diff.data[k])
    expected = 1.0 if i == j else 0.0
    raise ForceMapError(
        f"M_f M_xᵀ ≠ I: entry (bead {i}, bead {j}) is {expected + dev:.6g}, should be {expected:g} "
        f"(|deviation| {abs(dev):.3g} > atol {atol:g}). The mapped forces would not estimate the mean force. "
        "For beads that share atoms or are joined by constraints, build the force map with "
        "constraint_aware_force_map() or optimal_force_map() instead of summing atomic forces"
    )


def constraint_groups(n_atoms: int, constraints) -> np.ndarray:
    """Label of the constraint group (connected component of the constraint graph) of each atom;
    atoms in no constraint have a group of their own. Returns an (n_atoms,) int array."""
    pairs = _normalise_pairs(constraints, n_atoms, "constraint")
    if not pairs:
        return np.arange(n_atoms)
    i, j = np.array(pairs).T
    graph = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_atoms, n_atoms))
    return connected_components(graph, directed=False)[1]


def _bead_sets(atom_indices, n_atoms: int) -> List[frozenset]:
    owners: List[set] = [set() for _ in range(n_atoms)]
    for bead, atoms in enumerate(atom_indices):
        for a in atoms:
            owners[int(a)].add(bead)
    return [frozenset(o) for o in owners]


def crossing_constraints(atom_indices: Sequence[Sequence[int]], constraints, n_atoms: Optional[int] = None) -> List[Tuple[int, int]]:
    """The constrained pairs (a, b) whose atoms do not belong to exactly the same beads: the
    constraints that make the plain sum of getForces() wrong."""
    raw = list(constraints or ())
    if n_atoms is None:
        biggest = [int(x) for atoms in atom_indices for x in atoms] + [int(x) for pair in raw for x in pair]
        n_atoms = 1 + max(biggest, default=-1)
    pairs = _normalise_pairs(raw, n_atoms, "constraint")
    owners = _bead_sets(atom_indices, n_atoms)
    return [(a, b) for a, b in pairs if owners[a] != owners[b]]


def check_constraint_cancellation(force_map, constraints, atol: float = 1e-8) -> None:
    """Raise :class:`ForceMapError` unless M_f[I, a] = M_f[I, b] for every bead I and constrained
    pair (a, b): the condition for the (omitted) constraint forces to cancel in M_f f."""
    m_f = _csr(force_map, "force_map").tocsc()
    pairs = _normalise_pairs(constraints, m_f.shape[1], "constraint")
    if not pairs:
        return
    first, second = np.array(pairs).T
    diff = (m_f[:, first] - m_f[:, second]).tocoo()
    if diff.nnz == 0 or np.max(np.abs(diff.data)) <= atol:
        return
    k = int(np.argmax(np.abs(diff.data)))
    bead, (a, b) = int(diff.row[k]), pairs[int(diff.col[k])]
    raise ForceMapError(
        f"force map weights of constrained atoms {a} and {b} differ for bead {bead} "
        f"({m_f[bead, a]:.6g} vs {m_f[bead, b]:.6g}): the constraint force between them, which "
        "getForces() omits, would leak into that bead's force. Use constraint_aware_force_map(), "
        "or forces from a run without this constraint"
    )


# --------------------------------------------------------------------------------------------
# Per-bead equality-constrained least squares
# --------------------------------------------------------------------------------------------


def _supports(atom_indices, n_atoms: int, groups: np.ndarray, bonds, neighbors: int, exclude=()) -> List[np.ndarray]:
    """Support of each row of M_f: the bead's atoms, atoms up to ``neighbors`` bonds away, and the
    whole constraint group of every atom so included (so that equal weights are possible), less
    the ``exclude``d atoms (virtual sites)."""
    if int(neighbors) < 0:
        raise ValueError(f"neighbors must be >= 0 bonds, got {neighbors}")
    graph = BondGraph(n_atoms, _normalise_pairs(bonds, n_atoms, "bond") if neighbors else [])
    excluded = set(int(a) for a in exclude)
    members_of_group: Dict[int, List[int]] = {}
    for atom, g in enumerate(groups):
        members_of_group.setdefault(int(g), []).append(atom)
    out = []
    for atoms in atom_indices:
        base = graph.neighbourhood(np.unique(np.asarray(atoms, dtype=int)), int(neighbors))
        closed = set(int(a) for a in base)
        for g in set(int(groups[a]) for a in base):
            closed.update(members_of_group[g])
        out.append(np.array(sorted(closed - excluded), dtype=int))
    return out


def _solve_rows(
    coordinate_map: sp.csr_matrix,
    atom_indices,
    supports: List[np.ndarray],
    groups: np.ndarray,
    objective: Callable[[int, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]],
    on_infeasible: Callable[[int, np.ndarray, float], None],
    atol: float,
) -> sp.csr_matrix:
    """Solve, bead by bead, min ½ zᵀHz − gᵀz s.t. (M_x[:, S] P) z = e_I, with w = P z the weights
    on the support S and P the 0/1 matrix tying atoms of one constraint group to one variable
    (equalities (2)). ``objective(bead, S, P)`` returns (H, g) in group space. KKT system:
    [[H, Aᵀ], [A, 0]] [z; λ] = [g; b], solved by least squares and checked for feasibility."""
    m_x = coordinate_map.tocsc()
    n_beads, n_atoms = coordinate_map.shape
    rows, cols, vals = [], [], []
    for bead in range(n_beads):
        support = supports[bead]
        labels, inverse = np.unique(groups[support], return_inverse=True)
        tie = np.zeros((len(support), len(labels)))
        tie[np.arange(len(support)), inverse] = 1.0
        block = m_x[:, support].tocoo()
        touching = np.unique(np.append(block.row, bead))
        local = {int(b): k for k, b in enumerate(touching)}
        a_atoms = np.zeros((len(touching), len(support)))
        a_atoms[[local[int(r)] for r in block.row], block.col] = block.data
        a = a_atoms @ tie
        b = np.zeros(len(touching))
        b[local[bead]] = 1.0
        h, g = objective(bead, support, tie)
        nv, nc = len(labels), len(touching)
        kkt = np.zeros((nv + nc, nv + nc))
        kkt[:nv, :nv] = h
        kkt[:nv, nv:] = a.T
        kkt[nv:, :nv] = a
        rhs = np.concatenate([g, b])
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
        z = solution[:nv]
        residual = float(np.max(np.abs(a @ z - b)))
        if not residual <= atol:
            on_infeasible(bead, support, residual)
        w = tie @ z
        keep = np.abs(w) > 1e-14
        rows.append(np.full(int(keep.sum()), bead))
        cols.append(support[keep])
        vals.append(w[keep])
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    return sp.csr_matrix((cat(vals, float), (cat(rows, int), cat(cols, int))), shape=(n_beads, n_atoms))


def _infeasible_reporter(atom_indices, groups, atom_labels, bead_labels, what: str):
    owners = None

    def report(bead: int, support: np.ndarray, residual: float) -> None:
        nonlocal owners
        if owners is None:
            owners = _bead_sets(atom_indices, len(groups))
        own = set(int(a) for a in atom_indices[bead])
        crossing = []
        for g in sorted(set(int(groups[a]) for a in own)):
            members = [int(a) for a in np.flatnonzero(groups == g)]
            others = sorted(set().union(*(owners[a] for a in members)) - {bead})
            if len(members) > 1 and others:
                crossing.append((members, others))
        if crossing:
            members, others = crossing[0]
            names = ", ".join(_label(atom_labels, a, "atom") for a in members[:6]) + (" ..." if len(members) > 6 else "")
            beads = ", ".join(_label(bead_labels, b, "bead") for b in others[:4])
            cause = (
                f"the constraint group [{names}] joins it to {beads}. getForces() omits constraint forces, "
                "so each bead must give every atom of a constraint group the same weight for them to cancel, and "
                "then no weights satisfy M_f M_xᵀ = I (the constraints fix the geometry between these beads, "
                "so there is no mean force to estimate along it)"
            )
        else:
            cause = "no weights on its support satisfy M_f M_xᵀ = I (does it have an atom of its own with a non-zero coordinate weight?)"
        raise ForceMapError(
            f"no {what} exists for {_label(bead_labels, bead, 'bead')} (residual {residual:.3g}): {cause}. "
            "Fix: put each constraint group inside a single bead, run the reference simulation without "
            "these constraints (constraints=None, rigidWater=False: flexible bonds), or give the bead more atoms of its own"
        )

    return report


def constraint_aware_force_map(
    coordinate_map,
    atom_indices: Sequence[Sequence[int]],
    constraints=(),
    *,
    bonds=(),
    neighbors: int = 0,
    atom_labels: Optional[Sequence[str]] = None,
    bead_labels: Optional[Sequence[str]] = None,
    atol: float = 1e-9,
) -> sp.csr_matrix:
    """The force map closest to the plain sum that satisfies M_f M_xᵀ = I and cancels constraint
    forces (M_f[I, a] = M_f[I, b] for every constrained pair; see the module docstring).

    Per bead I: minimise ‖w − 1_I‖² over weights w on the support (bead I's atoms, atoms up to
    ``neighbors`` bonds away along ``bonds``, and the constraint groups of all of them), one
    shared weight per constraint group, subject to w · M_x[J] = δ_IJ for every bead J touching
    the support. Equals :func:`basic_force_map` whenever that one is valid. Raises
    :class:`ForceMapError` naming the bead and the constraint group when no weights exist.

    ``constraints``: (a, b) atom-index pairs (:func:`multiscale.cg.constraints_of`). ``atom_labels``
    and ``bead_labels`` only make error messages readable. Returns CSR (n_beads, n_atoms).
    """
    m_x = _csr(coordinate_map, "coordinate_map")
    n_atoms = m_x.shape[1]
    if len(atom_indices) != m_x.shape[0]:
        raise ValueError(f"atom_indices lists {len(atom_indices)} beads but the coordinate map has {m_x.shape[0]} rows")
    groups = constraint_groups(n_atoms, constraints)
    supports = _supports(atom_indices, n_atoms, groups, bonds, neighbors)

    def least_change(bead, support, tie):
        target = np.isin(support, np.asarray(atom_indices[bead], dtype=int)).astype(float)
        return tie.T @ tie, tie.T @ target

    report = _infeasible_reporter(atom_indices, groups, atom_labels, bead_labels, "constraint-aware force map")
    m_f = _solve_rows(m_x, atom_indices, supports, groups, least_change, report, atol)
    check_force_map(m_x, m_f, atol=1e-7)
    check_constraint_cancellation(m_f, constraints, atol=1e-7)
    return m_f


def default_force_map(
    coordinate_map,
    atom_indices: Sequence[Sequence[int]],
    constraints=(),
    *,
    atom_labels: Optional[Sequence[str]] = None,
    bead_labels: Optional[Sequence[str]] = None,
) -> Tuple[sp.csr_matrix, str]:
    """The force map a mapping uses by default, and its kind: the plain sum ("sum") when beads
    share no atom and no constraint crosses a bead boundary, otherwise the constraint-aware
    least-change map ("constraint-aware"). Both are checked against M_f M_xᵀ = I."""
    m_x = _csr(coordinate_map, "coordinate_map")
    n_atoms = m_x.shape[1]
    counts = np.zeros(n_atoms, dtype=int)
    for atoms in atom_indices:
        counts[np.asarray(atoms, dtype=int)] += 1
    if counts.max(initial=0) <= 1 and not crossing_constraints(atom_indices, constraints, n_atoms):
        m_f = basic_force_map(atom_indices, n_atoms)
        check_force_map(m_x, m_f, atol=1e-9)
        return m_f, "sum"
    return constraint_aware_force_map(m_x, atom_indices, constraints, atom_labels=atom_labels, bead_labels=bead_labels), "constraint-aware"


@dataclass
class OptimalForceMap:
    """Result of :func:`optimal_force_map`.

    force_map: CSR (n_beads, n_atoms), satisfies M_f M_xᵀ = I and the constraint equalities.
    baseline_map: the map it is compared with (by default the plain-sum/constraint-aware map).
    mean_square_baseline, mean_square_optimal: (n_beads,) mean over frames of |F_I|² of the mapped
    forces, (kJ/mol/nm)², on the forces the map was fitted to (in-sample).
    """

    force_map: sp.csr_matrix
    baseline_map: sp.csr_matrix
    mean_square_baseline: np.ndarray
    mean_square_optimal: np.ndarray

    @property
    def reduction(self) -> float:
        """Fraction by which the summed mean-square mapped force dropped: 1 − Σ optimal / Σ baseline.
        The PMF part of the mean square is map-independent, so this is a lower bound on the relative
        reduction of the noise variance itself."""
        return 1.0 - float(self.mean_square_optimal.sum() / self.mean_square_baseline.sum())


def _mean_square(force_map: sp.csr_matrix, forces: np.ndarray) -> np.ndarray:
    t, n, _ = forces.shape
    mapped = force_map @ np.moveaxis(forces, 1, 0).reshape(n, t * 3)
    return (mapped**2).reshape(force_map.shape[0], t, 3).sum(axis=2).mean(axis=1)


def optimal_force_map(
    coordinate_map,
    atom_indices: Sequence[Sequence[int]],
    forces,
    *,
    constraints=(),
    bonds=(),
    neighbors: int = 0,
    ridge: float = 1e-8,
    baseline=None,
    exclude=(),
    atom_labels: Optional[Sequence[str]] = None,
    bead_labels: Optional[Sequence[str]] = None,
    atol: float = 1e-8,
) -> OptimalForceMap:
    """Minimum-noise force map (Krämer et al., J. Phys. Chem. Lett. 2023) from sampled forces.

    ``forces``: (T, N, 3) atomistic forces in kJ/mol/nm, e.g. from ``State.getForces()`` (which
    lacks constraint forces: the equalities for ``constraints`` make that harmless). Per bead I,
    minimises wᵀ C w with C_ij = (1/T) Σ_t Σ_α f_tiα f_tjα (+ ``ridge`` × mean diagonal on the
    diagonal, for sample covariances that are singular) over weights w on the support (bead I's
    atoms, plus atoms up to ``neighbors`` bonds away along ``bonds``, plus their constraint groups),
    one weight per constraint group, subject to w · M_x[J] = δ_IJ for every bead J — an
    equality-constrained quadratic program solved through its KKT system.

    ``exclude``: atoms no bead may use (virtual sites, see the module docstring); the bead atoms
    in ``atom_indices`` should already leave them out. Wider supports (``neighbors`` ≥ 1) let a bead use the forces of neighbouring atoms to cancel
    stiff bonded noise across its boundary; ``neighbors=0`` keeps the sparsity of the plain sum.
    Mean squares are measured on the same frames the map was fitted to; use enough frames
    (3T well above the support size) or check on held-out frames with the returned map.
    """
    m_x = _csr(coordinate_map, "coordinate_map")
    n_beads, n_atoms = m_x.shape
    forces = np.asarray(forces, dtype=np.float64)
    if forces.ndim != 3 or forces.shape[1:] != (n_atoms, 3):
        raise ValueError(f"forces must be a (T, {n_atoms}, 3) array in kJ/mol/nm, got shape {forces.shape}")
    if not np.all(np.isfinite(forces)):
        raise ValueError("forces contain NaN or Inf")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if baseline is None:
        baseline, _ = default_force_map(m_x, atom_indices, constraints, atom_labels=atom_labels, bead_labels=bead_labels)
    baseline = _csr(baseline, "baseline")
    groups = constraint_groups(n_atoms, constraints)
    supports = _supports(atom_indices, n_atoms, groups, bonds, neighbors, exclude)

    def minimum_variance(bead, support, tie):
        x = np.moveaxis(forces[:, support, :], 2, 1).reshape(-1, len(support))
        cov = x.T @ x / forces.shape[0]
        scale = float(np.mean(np.diag(cov))) or 1.0
        cov[np.diag_indices_from(cov)] += ridge * scale
        return tie.T @ cov @ tie, np.zeros(tie.shape[1])

    report = _infeasible_reporter(atom_indices, groups, atom_labels, bead_labels, "optimal force map")
    m_f = _solve_rows(m_x, atom_indices, supports, groups, minimum_variance, report, atol)
    check_force_map(m_x, m_f, atol=1e-6)
    check_constraint_cancellation(m_f, constraints, atol=1e-6)
    return OptimalForceMap(m_f, baseline, _mean_square(baseline, forces), _mean_square(m_f, forces))
