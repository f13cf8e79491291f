"""Multiscale coarse-graining (MS-CG): force matching of tabulated potentials by linear least
squares (Izvekov & Voth 2005; Noid et al. 2008), as VOTCA's csg_fmatch does.

The CG force on every bead is linear in the unknowns: g(q) = Σ c_k B_k(q) for each pair, bond and
angle type (linear B-splines, :class:`~multiscale.cg.tabulated.basis.HatBasis`) and the
coefficients aₙ of the combined bending–torsion terms. Minimising Σ_frames ‖F_mapped − A c‖²
needs only the normal equations AᵀA c = Aᵀ F, accumulated frame by frame (memory O(columns²), not
O(frames × beads)). A second-difference penalty keeps each table smooth where samples are few.

With ``pressure_bar`` set, the solution is constrained (Lagrange multiplier) so that the model's
mean virial pressure over the reference configurations equals the target: the virial constraint of
Das & Andersen (J. Chem. Phys. 132, 164106 (2010)). Force matching leaves the CG pressure free;
with the constraint the model's density at that pressure follows. ``pressure_axes: xy`` constrains
the lateral pressure (P_xx + P_yy)/2 instead, for a bilayer in the xy plane: a solvent-free
bilayer at zero surface tension with its box height fixed takes the area at which its lateral
pressure is the target. Virial components come from each term's local coordinates
(Σ_m x_m,a ∂q/∂x_m,a), so angles and dihedrals, scale-free under an isotropic change, count
under a lateral one.

Written here rather than taken from VOTCA/OpenMSCG: those are C++ programs with their own file
formats and no Python API on this stack; the whole method is the few linear-algebra steps below.

Units: nm, rad, kJ/mol, K, bar; positions (T, n, 3) nm, forces (T, n, 3) kJ/mol/nm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from multiscale.cg.geometry import _as_index
from multiscale.cg.priors.contacts import _type_codes, excluded_pairs
from multiscale.cg.priors.records import TypeKey, canonical_key
from multiscale.cg.tabulated import terms
from multiscale.cg.tabulated.basis import HatBasis
from multiscale.cg.tabulated.config import TabulatedConfig
from multiscale.cg.tabulated.kernel_density import kernel_density
from multiscale.cg.tabulated.tables import TabulatedModel, Table
from multiscale.units import KJ_PER_MOL_NM3_TO_BAR, kT


@dataclass
class _Block:
    kind: str            # "pair", "bond", "angle", "dihedral"
    key: TypeKey
    offset: int          # first column
    size: int            # columns
    basis: Optional[HatBasis] = None


class _Problem:
    """Column layout and per-frame design of one CG system."""

    def __init__(self, bead_types, bonds, angles, dihedrals, config: TabulatedConfig):
        self.names = [str(t) for t in bead_types]
        self.n = len(self.names)
        self.config = config
        self.bonds = _as_index(bonds, 2, "bonds", self.n)
        self.angles = _as_index(angles, 3, "angles", self.n)
        self.dihedrals = _as_index(dihedrals, 4, "dihedrals", self.n) if config.dihedral_order >= 0 else np.zeros((0, 4), int)
        excluded = excluded_pairs(self.n, self.bonds, config.exclusion)
        self.excluded_codes = np.sort(excluded[:, 0].astype(np.int64) * self.n + excluded[:, 1])
        self.blocks: Dict[Tuple[str, TypeKey], _Block] = {}
        self.columns = 0

    def keys(self, index: np.ndarray) -> List[TypeKey]:
        return [canonical_key([self.names[i] for i in row]) for row in index.tolist()]

    def add_block(self, kind: str, key: TypeKey, size: int, basis: Optional[HatBasis] = None) -> None:
        self.blocks[(kind, key)] = _Block(kind, key, self.columns, size, basis)
        self.columns += size

    # --- geometry -----------------------------------------------------------------------------
    def pairs(self, x: np.ndarray, box: Optional[np.ndarray]):
        """Non-excluded pairs i < j within the cutoff: (i, j, r, unit vector from i to j)."""
        import torch

        from multiscale.neighbors import NeighborList

        xt = torch.as_tensor(x)
        cell = None if box is None else torch.as_tensor(box)
        i, j, shifts = (t.numpy() for t in NeighborList(self.config.cutoff_nm).pairs(xt, cell))
        d = x[j] - x[i]
        if box is not None:
            d = d + shifts.astype(np.float64) @ box
        r = np.linalg.norm(d, axis=1)
        keep = (i < j) & (r < self.config.cutoff_nm)
        codes = i * self.n + j
        if self.excluded_codes.size:
            pos = np.clip(np.searchsorted(self.excluded_codes, codes), 0, self.excluded_codes.size - 1)
            keep &= self.excluded_codes[pos] != codes
        i, j, r, d = i[keep], j[keep], r[keep], d[keep]
        return i, j, r, d / r[:, None]

    def pair_keys(self, i: np.ndarray, j: np.ndarray, codes: np.ndarray, unique: List[str]) -> np.ndarray:
        a, b = np.minimum(codes[i], codes[j]), np.maximum(codes[i], codes[j])
        return a * len(unique) + b


def _check_data(positions, forces, boxes):
    x = np.asarray(positions, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape != f.shape:
        raise ValueError(f"positions {x.shape} and forces {f.shape} must both be (frames, beads, 3)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(f))):
        raise ValueError("positions and forces must be finite")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (x.shape[0], 3, 3):
            raise ValueError(f"boxes must be (frames, 3, 3) nm, got {boxes.shape}")
    return x, f, boxes


def _ranges(problem: _Problem, x, boxes, config: TabulatedConfig, unique, codes):
    """The sampled range of every bond and angle type, their samples, and the closest contacts of
    every pair type."""
    bond_q: Dict[TypeKey, List[float]] = {}
    angle_q: Dict[TypeKey, List[float]] = {}
    sampled: Dict[Tuple[str, TypeKey], List[float]] = {}
    bond_keys, angle_keys = problem.keys(problem.bonds), problem.keys(problem.angles)
    closest: Dict[int, np.ndarray] = {}
    counts: Dict[int, int] = {}
    m = config.min_pair_count
    for t in range(x.shape[0]):
        box = None if boxes is None else boxes[t]
        if len(problem.bonds):
            r, _ = terms.distances(terms.local_copies(x[t], problem.bonds, box))
            for key, value in zip(bond_keys, r):
                sampled.setdefault(("bond", key), []).append(value)
                lo_hi = bond_q.setdefault(key, [np.inf, -np.inf])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], value), max(lo_hi[1], value)
        if len(problem.angles):
            th, _ = terms.angles(terms.local_copies(x[t], problem.angles, box))
            for key, value in zip(angle_keys, th):
                sampled.setdefault(("angle", key), []).append(value)
                lo_hi = angle_q.setdefault(key, [np.inf, -np.inf])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], value), max(lo_hi[1], value)
        i, j, r, _ = problem.pairs(x[t], box)
        pk = problem.pair_keys(i, j, codes, unique)
        for code in np.unique(pk):
            values = np.sort(r[pk == code])
            counts[int(code)] = counts.get(int(code), 0) + values.size
            merged = np.sort(np.concatenate([closest.get(int(code), np.zeros(0)), values[:m]]))[:m]
            closest[int(code)] = merged
    return bond_q, angle_q, closest, counts, {k: np.asarray(v) for k, v in sampled.items()}


#: Boltzmann-inverted bonded tables: the density (relative to the peak) below which the table
#: stops and the walls take over
_BI_MIN_DENSITY = 2e-3


#: a force-matched bonded table's knots where the sampled density is below this fraction of its
#: peak are edge knots, fitted on a handful of values (see :func:`_restoring_edges`)
EDGE_MIN_DENSITY = 0.02


def _restoring_edges(knots: np.ndarray, force: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, int]:
    """The fitted g(q) = −dU/dq of a bond or angle table with its thinly sampled edges made
    restoring: below the sampled distribution's peak g ≥ 0, above it g ≤ 0, on the edge knots
    only (density < :data:`EDGE_MIN_DENSITY` of the peak), and the count of knots changed.

    Why: the least-squares coefficient of an edge knot rests on a few samples and can come out
    with either sign; the wall beyond the table starts from it (g = c₀ + wall (start − q)), so an
    attractive c₀ = −840 kJ mol⁻¹ nm⁻¹ at a polyethylene end bond's inner edge (0.305 nm) made a
    spurious well at 0.22 nm, 10 kJ/mol deep, into which CG bonds fell after ~10⁴ steps."""
    g = np.array(force, dtype=np.float64)
    if values.size == 0:
        return g, 0
    density = kernel_density(knots, values, float(np.min(np.diff(knots))))
    peak = knots[int(np.argmax(density))]
    edge = density < EDGE_MIN_DENSITY * density.max()
    low, high = edge & (knots < peak) & (g < 0), edge & (knots > peak) & (g > 0)
    g[low | high] = 0.0
    return g, int(np.count_nonzero(low | high))


def _boltzmann_table(kind: str, samples: np.ndarray, spacing: float, temperature_K: float, wall: float) -> Table:
    """g(q) = −dU/dq of U(q) = −kBT ln[P(q)/J(q)] (J = q² for bonds, sin q for angles), P a
    Gaussian kernel density estimate on knots every ``spacing``, kept where P is above
    :data:`_BI_MIN_DENSITY` of its peak (walls beyond)."""
    lo, hi = float(samples.min()), float(samples.max())
    if kind == "angle":
        hi = min(hi, np.pi)
    basis = HatBasis.covering(lo, hi, spacing)
    q = basis.knots
    density = kernel_density(q, samples, spacing)
    keep = density >= _BI_MIN_DENSITY * density.max()
    first, last = np.flatnonzero(keep)[[0, -1]]
    if last - first < 2:
        first, last = max(first - 1, 0), min(last + 1, len(q) - 1)
    q, density = q[first:last + 1], density[first:last + 1]
    jacobian = q ** 2 if kind == "bond" else np.maximum(np.sin(q), np.sin(0.05))
    u = -kT(temperature_K) * np.log(np.maximum(density, 1e-300) / jacobian)
    return Table(kind, q, -np.gradient(u, q), wall, samples=int(samples.size))


def fit_tabulated(
    positions,
    forces,
    bead_types: Sequence[str],
    bonds: Any,
    angles: Any = (),
    dihedrals: Any = (),
    *,
    temperature_K: float,
    boxes=None,
    config: Optional[TabulatedConfig] = None,
    held_out: Optional[Tuple[Any, Any, Any]] = None,
    progress: bool = False,
) -> TabulatedModel:
    """Fit a :class:`~multiscale.cg.tabulated.tables.TabulatedModel` to mapped forces.

    ``positions``/``forces``: (T, n, 3) mapped bead positions (nm) and forces (kJ/mol/nm);
    ``boxes``: (T, 3, 3) nm cells (rows a, b, c) or None for open boundaries. ``bonds``,
    ``angles``, ``dihedrals``: bead index tuples (``Mapping.bead_bonds`` ...). ``held_out``: an
    optional (positions, forces, boxes) set on which the relative force residual is reported too.
    ``temperature_K``: sets the walls (in kBT) and the kinetic pressure of the virial constraint.

    ``model.fit`` holds: the relative force residual ‖F − Ac‖²/‖F‖² (train, held-out), the mean
    virial pressure (bar) on the reference configurations before and after the constraint, and
    the columns per kind, and ``unsampled_pairs``: the type pairs never seen within the cutoff,
    whose tables are a wall at the cutoff.
    """
    from tqdm import tqdm

    config = config or TabulatedConfig()
    if not 50.0 <= float(temperature_K) <= 5000.0:
        raise ValueError(f"temperature_K={temperature_K} is not a plausible temperature in kelvin")
    x, f, boxes = _check_data(positions, forces, boxes)
    problem = _Problem(bead_types, bonds, angles, dihedrals, config)
    if x.shape[1] != problem.n:
        raise ValueError(f"positions hold {x.shape[1]} beads but bead_types names {problem.n}")
    if config.pressure_bar is not None and boxes is None:
        raise ValueError("the pressure constraint needs periodic boxes (pressure_bar is set but boxes is None)")
    unique, codes = _type_codes(problem.names, problem.n)
    codes = np.asarray(codes, dtype=np.int64)
    beta_wall = kT(temperature_K) / config.wall_kT_nm ** 2
    axes = [0, 1, 2] if config.pressure_axes == "xyz" else [0, 1]
    isotropic = len(axes) == 3

    # --- 1. ranges and column layout --------------------------------------------------------
    bond_q, angle_q, closest, pair_counts, samples = _ranges(problem, x, boxes, config, unique, codes)
    # bonded tables by Boltzmann inversion (config.bonded "boltzmann"): fixed, not fitted
    fixed: Dict[Tuple[str, TypeKey], Table] = {}
    if config.bonded == "boltzmann":
        for (kind, key), values in samples.items():
            spacing = config.bond_spacing_nm if kind == "bond" else config.angle_spacing_rad
            fixed[(kind, key)] = _boltzmann_table(kind, values, spacing, temperature_K, beta_wall)
    pair_key_of = {a * len(unique) + b: (unique[a], unique[b]) for a in range(len(unique)) for b in range(a, len(unique))}
    for code in sorted(closest):
        start = float(closest[code][-1])
        basis = HatBasis.covering(start, config.cutoff_nm, config.pair_spacing_nm)
        basis = HatBasis(basis.start, config.cutoff_nm, int(round((config.cutoff_nm - basis.start) / config.pair_spacing_nm)) + 1)
        problem.add_block("pair", pair_key_of[code], basis.count - 1, basis)  # g(cutoff) = 0
    for key, (lo, hi) in sorted(bond_q.items()):
        if fixed:
            continue
        basis = HatBasis.covering(lo, hi, config.bond_spacing_nm)
        problem.add_block("bond", key, basis.count, basis)
    for key, (lo, hi) in sorted(angle_q.items()):
        if fixed:
            continue
        basis = HatBasis.covering(lo, min(hi, np.pi), config.angle_spacing_rad)
        if basis.stop > np.pi:
            basis = HatBasis(basis.start, np.pi, max(int(round((np.pi - basis.start) / config.angle_spacing_rad)) + 1, 2))
        problem.add_block("angle", key, basis.count, basis)
    dihedral_keys = problem.keys(problem.dihedrals)
    for key in sorted(set(dihedral_keys)):
        problem.add_block("dihedral", key, config.dihedral_order + 1)
    M = problem.columns
    pair_block_of = {code: problem.blocks[("pair", pair_key_of[code])] for code in closest}

    def unsampled_wall() -> Table:
        # the table of a type pair never within the cutoff in the fitted frames: the wall alone,
        # from one knot inside the cutoff (see the end of the fit)
        return Table("pair", [config.cutoff_nm - config.pair_spacing_nm, config.cutoff_nm], [0.0, 0.0], beta_wall)
    bond_blocks = [problem.blocks[("bond", k)] for k in problem.keys(problem.bonds)] if not fixed else []
    angle_blocks = [problem.blocks[("angle", k)] for k in problem.keys(problem.angles)] if not fixed else []
    bond_tables = [fixed[("bond", k)] for k in problem.keys(problem.bonds)] if fixed else []
    angle_tables = [fixed[("angle", k)] for k in problem.keys(problem.angles)] if fixed else []
    dihedral_offsets = np.array([problem.blocks[("dihedral", k)].offset for k in dihedral_keys], dtype=np.int64)

    def design(t: int, xs, fs, bxs):
        """Sparse A (3n × M), the wall forces (3n,), the virial row w (M,) and its constant part."""
        box = None if bxs is None else bxs[t]
        rows: List[np.ndarray] = []
        cols: List[np.ndarray] = []
        vals: List[np.ndarray] = []
        wall_force = np.zeros((problem.n, 3))
        virial = np.zeros(M)
        virial_const = 0.0

        def add_hat(blocks_per_term, q, grads, beads, proj):
            # grads: (T, m, 3) ∂q/∂x of each term's beads; beads: (T, m); proj: (T,) virial of a
            # unit generalised force on each term along the pressure's axes (None: 0)
            nonlocal virial_const
            virial_too = proj is not None
            offsets = np.array([blk.offset for blk in blocks_per_term], dtype=np.int64)
            by_offset = {blk.offset: blk for blk in blocks_per_term}
            for offset, blk in by_offset.items():
                sel = offsets == offset
                qs, gs, bs = q[sel], grads[sel], beads[sel]
                basis = blk.basis
                low = qs < basis.start
                qc = np.clip(qs, basis.start, basis.stop)
                left, wl, wr = basis.weights(qc)
                if low.any():  # below the table: g = c_0 + wall (start − q)
                    left[low], wl[low], wr[low] = 0, 1.0, 0.0
                    extra = beta_wall * (basis.start - qs[low])
                    np.add.at(wall_force, bs[low].ravel(), (extra[:, None, None] * gs[low]).reshape(-1, 3))
                    if virial_too:
                        virial_const += float((extra * proj[sel][low]).sum())
                for kk, w in ((left, wl), (left + 1, wr)):
                    ok = (kk < blk.size) & (w != 0.0)
                    col = blk.offset + kk[ok]
                    contrib = w[ok][:, None, None] * gs[ok]  # (T', m, 3)
                    m_ = gs.shape[1]
                    rows.append((bs[ok][:, :, None] * 3 + np.arange(3)).ravel())
                    cols.append(np.repeat(col, m_ * 3))
                    vals.append(contrib.ravel())
                    if virial_too:
                        np.add.at(virial, col, w[ok] * proj[sel][ok])

        def add_fixed(tables_per_term, q, grads, beads, proj):
            # forces of fixed (Boltzmann-inverted) tables: subtracted from the target like the walls
            nonlocal virial_const
            g = np.empty(len(q))
            for table in {id(tb): tb for tb in tables_per_term}.values():
                sel = np.array([tb is table for tb in tables_per_term])
                g[sel] = table.force_at(q[sel])
            np.add.at(wall_force, beads.ravel(), (g[:, None, None] * grads).reshape(-1, 3))
            if proj is not None:
                virial_const += float((g * proj).sum())

        def projected(local, g):
            # Σ over the term's beads and the pressure's axes of x_m,a ∂q/∂x_m,a
            return np.einsum("tma,tma->t", local[..., axes], g[..., axes])

        if len(closest):
            i, j, r, u = problem.pairs(xs[t], box)
            pk = problem.pair_keys(i, j, codes, unique)
            grads = np.stack([-u, u], axis=1)
            proj = r * (u[:, axes] ** 2).sum(1)
            fitted = np.isin(pk, list(pair_block_of))
            if not fitted.all():
                # a type pair that the fitted frames never brought within the cutoff, within it in
                # these (held-out) frames: its force is its table's, the wall alone
                add_fixed([unsampled_wall()] * int((~fitted).sum()), r[~fitted], grads[~fitted],
                          np.stack([i, j], 1)[~fitted], proj[~fitted])
            add_hat([pair_block_of[int(c)] for c in pk[fitted]], r[fitted], grads[fitted], np.stack([i, j], 1)[fitted],
                    proj[fitted])
        if len(problem.bonds):
            local = terms.local_copies(xs[t], problem.bonds, box)
            r, g = terms.distances(local)
            if fixed:
                add_fixed(bond_tables, r, g, problem.bonds, projected(local, g))
            else:
                add_hat(bond_blocks, r, g, problem.bonds, projected(local, g))
        if len(problem.angles):
            local = terms.local_copies(xs[t], problem.angles, box)
            th, g = terms.angles(local)
            # scale-free: no isotropic virial; a lateral one
            if fixed:
                add_fixed(angle_tables, th, g, problem.angles, None if isotropic else projected(local, g))
            else:
                add_hat(angle_blocks, th, g, problem.angles, None if isotropic else projected(local, g))
        if len(problem.dihedrals):
            local = terms.local_copies(xs[t], problem.dihedrals, box)
            _, _, g = terms.bending_torsion(local, config.dihedral_order)
            # F = −Σ aₙ ∂eₙ/∂x; the angles and φ are scale-free, so no isotropic virial
            order = config.dihedral_order + 1
            if not isotropic:
                np.add.at(virial, dihedral_offsets[:, None] + np.arange(order),
                          -np.einsum("tma,tnma->tn", local[..., axes], g[..., axes]))
            rows.append(np.broadcast_to((problem.dihedrals[:, None, :, None] * 3 + np.arange(3)), g.shape).ravel())
            cols.append(np.broadcast_to((dihedral_offsets[:, None] + np.arange(order))[:, :, None, None], g.shape).ravel())
            vals.append(-g.ravel())
        A = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0),
                           (np.concatenate(rows) if rows else np.zeros(0, int), np.concatenate(cols) if cols else np.zeros(0, int))),
                          shape=(3 * problem.n, M))
        return A, wall_force.ravel(), virial, virial_const

    def accumulate(xs, fs, bxs, what: str):
        H = np.zeros((M, M))
        b = np.zeros(M)
        ff = 0.0
        p_row = np.zeros(M)
        p_const = 0.0
        for t in tqdm(range(xs.shape[0]), desc=what, disable=not progress):
            A, wall, virial, virial_const = design(t, xs, fs, bxs)
            target = fs[t].ravel() - wall
            H += (A.T @ A).toarray()
            b += A.T @ target
            ff += float(target @ target)
            if bxs is not None:
                volume = abs(np.linalg.det(bxs[t]))
                p_row += virial / (len(axes) * volume)
                p_const += (problem.n * kT(temperature_K) + virial_const / len(axes)) / volume
        count = xs.shape[0]
        return H, b, ff, p_row / count, p_const / count

    H, b, ff, p_row, p_const = accumulate(x, f, boxes, "MS-CG design")

    # --- 2. regularised solve, optionally under the virial constraint -------------------------
    R = np.zeros((M, M))
    for blk in problem.blocks.values():
        if blk.basis is None or config.smoothness == 0 or blk.size < 3:
            continue
        D = blk.basis.second_differences()[:, : blk.size][: blk.size - 2]
        s = slice(blk.offset, blk.offset + blk.size)
        scale = np.trace(H[s, s]) / blk.size
        R[s, s] += config.smoothness * scale * (D.T @ D)
    R += 1e-10 * np.trace(H) / max(M, 1) * np.eye(M)
    free = np.linalg.solve(H + R, b)
    fit_info: Dict[str, Any] = {"columns": M, "frames": int(x.shape[0]),
                                "columns_per_kind": {k: sum(bl.size for bl in problem.blocks.values() if bl.kind == k)
                                                     for k in ("pair", "bond", "angle", "dihedral")}}
    if config.pair_force_prior is not None:
        # Gaussian prior N(0, s²) on each pair knot's force: with noise of variance σ² on every
        # mapped force component, the posterior mean solves (H + σ²/s² I) c = b. σ² from the
        # residual of the smooth fit (the mapped forces of a solvated system are mostly the
        # solvent's kicks: noise to the CG model). A knot with H_kk ≪ σ²/s² (few samples) goes to
        # 0 force; one with H_kk ≫ σ²/s² keeps its fitted force.
        sigma2 = max(float(free @ H @ free - 2.0 * b @ free + ff), 0.0) / (3 * problem.n * x.shape[0])
        weight = sigma2 / config.pair_force_prior ** 2
        held_by_prior = {}
        for blk in problem.blocks.values():
            if blk.kind != "pair":
                continue
            s_ = slice(blk.offset, blk.offset + blk.size)
            R[s_, s_] += weight * np.eye(blk.size)
            few = int(np.sum(np.diag(H)[s_] < weight))
            if few:
                held_by_prior["-".join(blk.key)] = few
        free = np.linalg.solve(H + R, b)
        fit_info["pair_force_prior"] = {"width_kj_mol_nm": float(config.pair_force_prior),
                                        "noise_rms_kj_mol_nm": float(np.sqrt(sigma2)), "weight": float(weight),
                                        "knots_mostly_prior": held_by_prior}
    coefficients = free
    if boxes is not None:
        fit_info["pressure_unconstrained_bar"] = float((p_row @ free + p_const) * KJ_PER_MOL_NM3_TO_BAR)
    if config.pressure_bar is not None:
        target = config.pressure_bar / KJ_PER_MOL_NM3_TO_BAR - p_const
        kkt = np.block([[H + R, p_row[:, None]], [p_row[None, :], np.zeros((1, 1))]])
        solution = np.linalg.solve(kkt, np.concatenate([b, [target]]))
        coefficients = solution[:M]
        fit_info["pressure_target_bar"] = float(config.pressure_bar)
    fit_info["pressure_axes"] = config.pressure_axes
    if boxes is not None:
        fit_info["pressure_bar"] = float((p_row @ coefficients + p_const) * KJ_PER_MOL_NM3_TO_BAR)

    def residual(Hm, bm, ffm, c):
        return float((c @ Hm @ c - 2.0 * bm @ c + ffm) / ffm) if ffm > 0 else float("nan")

    fit_info["relative_force_residual"] = residual(H, b, ff, coefficients)
    if config.pressure_bar is not None:
        fit_info["relative_force_residual_unconstrained"] = residual(H, b, ff, free)
    if held_out is not None:
        hx, hf, hb = _check_data(*held_out)
        Hh, bh, ffh, _, _ = accumulate(hx, hf, hb, "MS-CG held-out")
        fit_info["relative_force_residual_held_out"] = residual(Hh, bh, ffh, coefficients)

    # --- 3. tables --------------------------------------------------------------------------
    pairs, bonds_t, angles_t, dih = {}, {}, {}, {}
    for (kind, key), table in fixed.items():
        (bonds_t if kind == "bond" else angles_t)[key] = table
    fit_info["bonded"] = config.bonded
    for blk in problem.blocks.values():
        c = coefficients[blk.offset: blk.offset + blk.size]
        if blk.kind == "pair":
            code = [k for k, v in pair_key_of.items() if v == blk.key][0]
            pairs[blk.key] = Table("pair", blk.basis.knots, np.concatenate([c, [0.0]]), beta_wall,
                                   samples=pair_counts.get(code, 0))
        elif blk.kind in ("bond", "angle"):
            g, clamped = _restoring_edges(blk.basis.knots, c, samples.get((blk.kind, blk.key), np.zeros(0)))
            (bonds_t if blk.kind == "bond" else angles_t)[blk.key] = Table(blk.kind, blk.basis.knots, g, beta_wall)
            if clamped:
                fit_info.setdefault("edge_knots_clamped", {})["-".join((blk.kind,) + tuple(blk.key))] = clamped
        else:
            dih[blk.key] = np.asarray(c, dtype=float)
    # Type pairs the reference never brought within the cutoff (the chain ends of one leaflet and
    # the phosphates of the other, say) have no data to fit: their table is the wall alone, from
    # one knot inside the cutoff, so the CG model keeps them as far apart as the reference did
    # instead of refusing to run or letting them overlap freely.
    unsampled = [pair_key_of[code] for code in sorted(pair_key_of) if pair_key_of[code] not in pairs]
    for key in unsampled:
        pairs[key] = unsampled_wall()
    fit_info["unsampled_pairs"] = [list(key) for key in unsampled]
    return TabulatedModel(pairs, bonds_t, angles_t, dih, config.exclusion, config.cutoff_nm, float(temperature_K), fit_info)
