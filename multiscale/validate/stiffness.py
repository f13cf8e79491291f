"""Stiffness and time step: λmax of the mass-weighted Hessian by Lanczos on Hessian-vector
products, never a dense Hessian.

The stiffest normal mode has ω_max = √λmax (λ in ps⁻² = kJ mol⁻¹ nm⁻² amu⁻¹, ω in ps⁻¹);
velocity Verlet is unstable for a harmonic mode once ω·Δt > 2, so Δt < 2/ω_max is the
stability limit and the recommended step is a stated fraction of the smallest limit found at
the structure and at a few thermal perturbations of it. Hessian-vector products are central
differences of the forces (they work for any System, ML or not): H·d ≈ −(F(x + εd) − F(x − εd))/2ε,
with the largest atomic displacement ε|d| = ``hessian_step_nm``. With constraints, the
constrained directions (the bond-length gradients in mass-weighted coordinates) are projected out:
λmax is then the stiffest mode the integrator still has to resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from multiscale.openmm.evaluation import thermal_snapshots
from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target, minimum_image_of


@dataclass
class LanczosResult:
    value: float
    vector: np.ndarray
    iterations: int
    converged: bool
    residual: float


def lanczos_largest(matvec: Callable[[np.ndarray], np.ndarray], n: int, iterations: int, tolerance: float,
                    rng: np.random.Generator, project: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> LanczosResult:
    """The largest eigenvalue of the symmetric operator ``matvec`` on R^n (restricted to the range
    of ``project``, an orthogonal projector), by Lanczos with full reorthogonalisation.

    Converged when θ changed by less than tolerance · |θ| in two successive iterations and the
    Ritz residual β_k |s_k| is below √tolerance · |θ| (a steady θ alone can stall while a nearly
    degenerate, slightly stiffer mode is still being found); a Krylov space that closes (β ≈ 0)
    is exact."""
    project = project or (lambda v: v)
    v = project(rng.normal(size=n))
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise ValueError("the operator's space is empty (every degree of freedom is constrained or massless)")
    basis = [v / norm]
    alphas: List[float] = []
    betas: List[float] = []
    theta_history: List[float] = []
    converged, residual = False, float("inf")
    s = np.ones(1)
    for k in range(min(int(iterations), n)):
        w = project(matvec(basis[-1]))
        alpha = float(w @ basis[-1])
        alphas.append(alpha)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            for q in basis:
                w = w - (w @ q) * q
        beta = float(np.linalg.norm(w))
        tri = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        values, vectors = np.linalg.eigh(tri)
        theta, s = float(values[-1]), vectors[:, -1]
        residual = beta * abs(float(s[-1]))
        theta_history.append(theta)
        scale = max(abs(theta), 1e-30)
        steady = len(theta_history) >= 3 and all(
            abs(theta_history[-1 - d] - theta_history[-2 - d]) <= tolerance * scale for d in range(2))
        if (steady and residual <= math.sqrt(tolerance) * scale) or beta <= 1e-12 * scale:
            converged = True
            break
        betas.append(beta)
        basis.append(w / beta)
    vector = np.array(basis[: len(s)]).T @ s
    return LanczosResult(theta_history[-1], vector / np.linalg.norm(vector), len(theta_history), converged, residual)


class MassWeightedHessian:
    """Products of the mass-weighted Hessian M^-1/2 H M^-1/2 with vectors over the massive
    particles' coordinates, by central differences of ``evaluator``'s forces at ``positions``."""

    def __init__(self, evaluator, positions: np.ndarray, box: Optional[np.ndarray], masses: np.ndarray, step_nm: float,
                 constraints: Sequence[Tuple[int, int, float]] = ()):
        self.evaluator, self.positions, self.box = evaluator, np.asarray(positions, dtype=np.float64), box
        self.massive = np.flatnonzero(masses > 0)
        self.inv_sqrt_mass = np.repeat(1.0 / np.sqrt(masses[self.massive]), 3)
        self.step = float(step_nm)
        self.n = 3 * self.massive.size
        self.calls = 0
        self.basis = self._constraint_basis(constraints, masses)

    def _constraint_basis(self, constraints, masses) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Per cluster of constraints that share particles (a CH3 group, a rigid water): the
        coordinate slots it touches and an orthonormal basis of its bond-length gradients in
        mass-weighted coordinates. Clusters are disjoint, so projecting each out in turn is the
        projection on the whole constrained space; no dense (3N × N_constraints) matrix is built."""
        slot = {int(p): k for k, p in enumerate(self.massive)}
        parent = {}

        def root(a):
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        kept = [(int(i), int(j)) for i, j, _ in constraints if int(i) in slot and int(j) in slot]
        for i, j in kept:
            parent[root(i)] = root(j)
        clusters: Dict[int, List[Tuple[int, int]]] = {}
        for i, j in kept:
            clusters.setdefault(root(i), []).append((i, j))
        blocks = []
        for pairs in clusters.values():
            atoms = sorted({a for pair in pairs for a in pair})
            local = {a: k for k, a in enumerate(atoms)}
            columns = np.zeros((3 * len(atoms), len(pairs)))
            for c, (i, j) in enumerate(pairs):
                e = self.positions[i] - self.positions[j]
                e = e / np.linalg.norm(e)
                columns[3 * local[i]: 3 * local[i] + 3, c] = e / math.sqrt(masses[i])
                columns[3 * local[j]: 3 * local[j] + 3, c] = -e / math.sqrt(masses[j])
            q, _ = np.linalg.qr(columns)
            index = np.concatenate([np.arange(3 * slot[a], 3 * slot[a] + 3) for a in atoms])
            blocks.append((index, q))
        return blocks

    def project(self, y: np.ndarray) -> np.ndarray:
        if not self.basis:
            return y
        y = y.copy()
        for index, q in self.basis:
            y[index] -= q @ (q.T @ y[index])
        return y

    def __call__(self, y: np.ndarray) -> np.ndarray:
        d = (self.inv_sqrt_mass * y).reshape(-1, 3)
        largest = float(np.max(np.linalg.norm(d, axis=1)))
        if largest == 0:
            return np.zeros_like(y)
        eps = self.step / largest
        plus, minus = self.positions.copy(), self.positions.copy()
        plus[self.massive] += eps * d
        minus[self.massive] -= eps * d
        _, f_plus = self.evaluator.energy_forces(plus, self.box)
        _, f_minus = self.evaluator.energy_forces(minus, self.box)
        self.calls += 2
        hd = -(f_plus[self.massive] - f_minus[self.massive]).ravel() / (2 * eps)
        return self.inv_sqrt_mass * hd


def describe_mode(vector: np.ndarray, massive: np.ndarray, masses: np.ndarray, positions: np.ndarray,
                  box: Optional[np.ndarray], types: Optional[Sequence[str]]) -> Dict:
    """Which particles the stiffest mode moves (shares of its mass-weighted amplitude, largest
    three) and, for the largest and its nearest moving neighbour, how much of their relative
    motion is along the line joining them (near 1: a stretch of that pair)."""
    y = vector.reshape(-1, 3)
    share = np.sum(y ** 2, axis=1)
    order = np.argsort(share)[::-1][:3]
    top = [[int(massive[k]), float(share[k])] for k in order]
    out: Dict = {"mode_particles": top}
    if len(order) < 2:
        return out
    a = order[0]
    ia = int(massive[a])
    # its partner: the nearest particle that the mode moves at all (≥ 2 % of the largest share; an
    # O–H stretch moves the O with ~6 % of the H's share, and nearly degenerate stretches of other
    # bonds may mix into the Ritz vector with larger shares than that)
    moving = [int(k) for k in np.flatnonzero(share >= 0.02 * share[a]) if k != a]
    if not moving:
        return out
    b = min(moving, key=lambda k: np.linalg.norm(minimum_image_of(positions[int(massive[k])] - positions[ia], box)))
    ib = int(massive[b])
    d = y[a] / math.sqrt(masses[ia]) - y[b] / math.sqrt(masses[ib])  # relative Cartesian displacement
    e = minimum_image_of(positions[ia] - positions[ib], box)
    e = e / np.linalg.norm(e)
    along = float((d @ e) ** 2 / max(float(d @ d), 1e-300))
    out["mode_pair"] = [ia, ib]
    out["stretch_fraction"] = along
    name = (lambda p: f"{p} ({types[p]})") if types is not None else str
    kind = "stretch" if along > 0.8 else "bend/mixed motion"
    out["mode"] = (f"{kind} of particles {name(ia)} and {name(ib)}: {100 * (share[a] + share[b]):.0f} % of the "
                   f"amplitude, {100 * along:.0f} % of their relative motion along the line joining them")
    return out


def stiffness_at(evaluator, positions, box, masses, constraints, settings: ValidationSettings, rng) -> Dict:
    hessian = MassWeightedHessian(evaluator, positions, box, masses, settings.hessian_step_nm, constraints)
    result = lanczos_largest(hessian, hessian.n, settings.lanczos_iterations, settings.lanczos_tolerance, rng, hessian.project)
    # Ritz values lie inside the spectrum, so θ never overestimates λmax; an unconverged θ is
    # raised by its residual (an eigenvalue lies within it) so that the step stays on the safe side
    lam = result.value if result.converged else result.value + result.residual
    omega = math.sqrt(lam) if lam > 0 else float("nan")
    return {
        "lambda_max": lam, "omega_max": omega,
        "period_fs": 2 * math.pi / omega * 1000 if lam > 0 else float("nan"),
        "stability_limit_fs": 2 / omega * 1000 if lam > 0 else float("nan"),
        "lanczos_iterations": result.iterations, "converged": result.converged,
        "relative_residual": result.residual / abs(lam) if lam else float("inf"),
        "force_evaluations": hessian.calls, "vector": result.vector, "massive": hessian.massive, "positions": hessian.positions,
    }


def stiffness_analysis(target: Target, settings: ValidationSettings, rng, platform: str) -> Tuple[Dict, Check]:
    """λmax at the structure and at ``thermal_configurations`` Langevin snapshots at
    ``temperature_K`` (run at the structure's recommended step); the stiffness summary for the
    report and the ``timestep`` check (fails if λmax is not positive and finite, if Lanczos did
    not converge, or if the thermal run blew up at the recommended step)."""
    configs = []
    first = stiffness_at(target.precise, target.positions, target.box, target.masses, target.constraints, settings, rng)
    first["label"] = "structure"
    configs.append(first)
    problems = []
    if not (first["lambda_max"] > 0 and math.isfinite(first["lambda_max"])):
        problems.append(f"λmax = {first['lambda_max']:.4g} ps⁻² at the structure: no stable oscillation (a saddle or a "
                        "flat energy); minimise the structure first")
    else:
        step_ps = settings.safety_fraction * first["stability_limit_fs"] / 1000
        try:
            snapshots = thermal_snapshots(target.working.system, target.positions, target.box, temperature_K=settings.temperature_K,
                                          timestep_ps=step_ps, count=settings.thermal_configurations,
                                          steps_between=settings.thermal_steps, platform=platform, seed=settings.seed)
        except ValueError as err:
            snapshots = []
            problems.append(str(err))
        for k, positions in enumerate(snapshots):
            entry = stiffness_at(target.precise, positions, target.box, target.masses, target.constraints, settings, rng)
            entry["label"] = f"{settings.temperature_K:g} K snapshot {k + 1} ({(k + 1) * settings.thermal_steps} steps)"
            configs.append(entry)
    limits = [c["stability_limit_fs"] for c in configs if math.isfinite(c["stability_limit_fs"])]
    stiffest = max(configs, key=lambda c: c["lambda_max"] if math.isfinite(c["lambda_max"]) else -math.inf)
    unconverged = [c["label"] for c in configs if not c["converged"]]
    notes = []
    if unconverged:
        notes.append(f"Lanczos did not converge in {settings.lanczos_iterations} iterations at {unconverged} (nearly "
                     "degenerate stiff modes); λmax there is the Ritz value plus its residual, an upper estimate: raise "
                     "lanczos_iterations for a sharper step")
    summary = {
        "lambda_max": stiffest["lambda_max"], "omega_max": stiffest["omega_max"], "period_fs": stiffest["period_fs"],
        "stability_limit_fs": min(limits) if limits else float("nan"),
        "recommended_timestep_fs": settings.safety_fraction * min(limits) if limits else float("nan"),
        "safety_fraction": settings.safety_fraction, "temperature_K": settings.temperature_K,
        "constrained": len(target.constraints),
        "configurations": [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in c.items()
                            if k not in ("vector", "massive", "positions")} for c in configs],
    }
    summary.update(describe_mode(stiffest["vector"], stiffest["massive"], target.masses, stiffest["positions"], target.box,
                                 target.types))
    value = summary["recommended_timestep_fs"]
    passed = not problems and math.isfinite(value)
    detail = (f"recommended step {value:.3g} fs = {settings.safety_fraction} × the smallest Verlet limit 2/ω_max "
              f"({summary['stability_limit_fs']:.3g} fs) over {len(configs)} configurations; stiffest mode: "
              f"{summary.get('mode', '?')}")
    if problems or notes:
        detail += ". " + "; ".join(problems + notes)
    return summary, Check("timestep", "stiffness", value, None, passed, "fs", detail)
