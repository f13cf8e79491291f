"""A table projected onto a closed form that OpenMM's CPU kernels evaluate cheaply: a polynomial.

Why: OpenMM's CPU platform runs a tabulated function 4-6 times slower than an expression, and a
``CustomCompoundBondForce`` (the only bonded force that takes tables) 3-5 times slower than
``CustomBondForce``/``CustomAngleForce`` (``bench_cg.py --kernels``: 1.24 against 0.27 ms per call
for this job's 192-bead pairs, 0.19 against 0.07 for its bonds, 0.33 against 0.07 for its angles).
A polynomial keeps every shape a force-matched table can have, where a native 12-6 pair or a
harmonic bond cannot, at the price of an expression.

Inside the table's knots [lo, hi], U(q) ≈ Σₘ bₘ yᵐ (Horner's rule, one expression), with
y = (v − centre) × scale in [−1, 1] and v = q (pairs, bonds) or v = cos q (angles: a polynomial in
cos θ is a cosine series Σ cₙ cos nθ, smooth through the straight angle). Beyond the knots the
table's own walls continue from the polynomial's value and slope at the edge (C¹). A pair form is
(1 − y)² × (a Chebyshev series), so that U and dU/dr vanish at the cutoff (y = 1) exactly.

The polynomial covers only where the model goes: the knots whose energy is within
:data:`FIT_KT` kBT of the table's lowest. Beyond, the walls take over, restoring from the edge
on (their slope at the edge is clipped to push back into the range). The tables' edges are walls
tens of kBT high: a polynomial through them spent its degrees there (1 kJ/mol errors where the
beads are) and came out of them with a slope that pulled beads outwards. The degree is the lowest
that brings the largest energy error below :data:`TOLERANCE_KJ_MOL` (at most
:data:`MAX_DEGREE`); :attr:`ClosedForm.max_error_kj_mol` records what was reached. Units: nm,
rad, kJ/mol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
from numpy.polynomial import chebyshev, polynomial

from multiscale.cg.tabulated.tables import Table

#: largest energy error (kJ/mol) over a table's knots that stops the degree search (0.03 kBT at
#: 450 K; the iterative refinements that follow correct smaller differences than they resolve)
TOLERANCE_KJ_MOL = 0.1
#: the highest polynomial degree tried (Chebyshev-fitted on [−1, 1], so the power-basis
#: coefficients stay below ~2¹⁵ × the Chebyshev ones and lose no precision in float64)
MAX_DEGREE = 16
#: the polynomial's range: where the table is within this many kBT of its lowest energy (a
#: Boltzmann factor of 6e-6)
FIT_KT = 12.0
#: points per knot interval on which the table is sampled for the fit
SAMPLES_PER_INTERVAL = 8


@dataclass(frozen=True)
class ClosedForm:
    """U(q) as a polynomial in y = (v − centre) × scale, v = q or cos q (``variable`` "q"/"cos"),
    inside [lo, hi] (q's units), with the table's quadratic walls (stiffness ``wall``, energy
    ½ wall × Δq²) beyond: U(q < lo) = u_lo + g_lo (lo − q) + ½ wall (lo − q)², and likewise above hi
    unless ``open_above`` (an angle table that ends at π: cos θ is symmetric there). ``g_lo``/
    ``g_hi`` are −dU/dq at the edges."""

    kind: str
    variable: str
    lo: float
    hi: float
    centre: float
    scale: float
    power: np.ndarray
    u_lo: float
    g_lo: float
    u_hi: float
    g_hi: float
    wall: float
    open_above: bool
    max_error_kj_mol: float

    @property
    def degree(self) -> int:
        return len(self.power) - 1

    def _y(self, q: np.ndarray) -> np.ndarray:
        v = np.cos(q) if self.variable == "cos" else q
        return (v - self.centre) * self.scale

    def energy_at(self, q) -> np.ndarray:
        """U(q) (kJ/mol), as OpenMM evaluates it (pairs: 0 at and beyond the cutoff)."""
        q = np.asarray(q, dtype=np.float64)
        inside = polynomial.polyval(self._y(np.clip(q, self.lo, self.hi)), self.power)
        below = self.u_lo + self.g_lo * (self.lo - q) + 0.5 * self.wall * (self.lo - q) ** 2
        above = self.u_hi - self.g_hi * (q - self.hi) + 0.5 * self.wall * (q - self.hi) ** 2
        u = np.where(q < self.lo, below, inside)
        if self.kind == "pair":
            return np.where(q >= self.hi, 0.0, u)
        return u if self.open_above else np.where(q > self.hi, above, u)

    def force_at(self, q) -> np.ndarray:
        """g(q) = −dU/dq inside the knots (kJ/mol per nm or rad)."""
        q = np.asarray(q, dtype=np.float64)
        dudy = polynomial.polyval(self._y(q), polynomial.polyder(self.power))
        dydq = self.scale * (-np.sin(q) if self.variable == "cos" else 1.0)
        return -dudy * dydq

    def with_ramp(self, a_kj_mol: float, cutoff_nm: float) -> "ClosedForm":
        """This pair form plus A (1 − r/r_c): a ramp is linear in r, so it joins the polynomial."""
        if self.kind != "pair":
            raise ValueError("only pair forms take a ramp")
        a = float(a_kj_mol)
        # 1 − r/r_c with r = centre + y / scale
        ramp = np.array([a * (1.0 - self.centre / cutoff_nm), -a / (self.scale * cutoff_nm)])
        power = polynomial.polyadd(self.power, ramp)
        return ClosedForm(self.kind, self.variable, self.lo, self.hi, self.centre, self.scale, power,
                          self.u_lo + a * (1.0 - self.lo / cutoff_nm), self.g_lo + a / cutoff_nm,
                          self.u_hi, self.g_hi, self.wall, self.open_above, self.max_error_kj_mol)

    def to_dict(self) -> Dict:
        return {"kind": self.kind, "degree": self.degree, "lo": self.lo, "hi": self.hi,
                "max_error_kj_mol": self.max_error_kj_mol}


def _fit(kind: str, y: np.ndarray, u: np.ndarray, degree: int) -> np.ndarray:
    """Power-basis coefficients of the least-squares polynomial of ``degree`` through (y, u);
    pairs: (1 − y)² × a Chebyshev series of degree − 2 (zero energy and force at y = 1)."""
    if kind != "pair":
        return chebyshev.cheb2poly(chebyshev.chebfit(y, u, degree))
    # columns (1 − y)² Tₖ(y), k = 0..degree − 2
    basis = (1.0 - y)[:, None] ** 2 * chebyshev.chebvander(y, degree - 2)
    coef, *_ = np.linalg.lstsq(basis, u, rcond=None)
    return polynomial.polymul([1.0, -2.0, 1.0], chebyshev.cheb2poly(coef))


def closed_form(table: Table, kt_kj_mol: float, fit_kt: float = FIT_KT, tolerance_kj_mol: float = TOLERANCE_KJ_MOL,
                max_degree: int = MAX_DEGREE) -> ClosedForm:
    """The polynomial closed form of ``table`` (see the module) for a model at kBT = ``kt_kj_mol``."""
    if not kt_kj_mol > 0:
        raise ValueError(f"kt_kj_mol must be > 0 (kBT in kJ/mol, 3.74 at 450 K), got {kt_kj_mol}")
    knots = table.knots
    grid = np.unique(np.concatenate([np.linspace(a, b, SAMPLES_PER_INTERVAL + 1) for a, b in zip(knots[:-1], knots[1:])]))
    u = table.energy_at(grid)
    inside = np.flatnonzero((u - u.min()) <= fit_kt * kt_kj_mol)
    first, last = int(inside[0]), int(inside[-1])
    if table.kind == "pair" or table.ends_straight:
        last = len(grid) - 1  # to the cutoff (U = g = 0) or to the straight angle (g = 0)
    grid, u = grid[first:last + 1], u[first:last + 1]
    if len(grid) < 2 * SAMPLES_PER_INTERVAL:
        raise ValueError(f"the {table.kind} table {knots[0]:.4g}..{knots[-1]:.4g} has too narrow a range within "
                         f"{fit_kt} kBT of its minimum for a closed form; refit it on more data")
    lo, hi = float(grid[0]), float(grid[-1])
    variable = "cos" if table.kind == "angle" else "q"
    v = np.cos(grid) if variable == "cos" else grid
    v_lo, v_hi = float(v.min()), float(v.max())
    centre, scale = 0.5 * (v_lo + v_hi), 2.0 / (v_hi - v_lo)
    y = (v - centre) * scale
    if table.kind == "pair":
        y = np.minimum(y, 1.0)  # the cutoff at exactly y = 1 despite rounding
    best = None
    for degree in range(4, max_degree + 1):
        power = _fit(table.kind, y, u, degree)
        error = float(np.max(np.abs(polynomial.polyval(y, power) - u)))
        if best is None or error < best[1]:
            best = (power, error)
        if error <= tolerance_kj_mol:
            break
    power, error = best
    open_above = bool(table.ends_straight)
    form = ClosedForm(table.kind, variable, lo, hi, centre, scale, power, 0.0, 0.0, 0.0, 0.0, float(table.wall),
                      open_above, error)
    u_edges = polynomial.polyval(form._y(np.array([lo, hi])), power)
    g_edges = form.force_at(np.array([lo, hi]))
    # the walls push back into the range from the edge on
    g_lo = max(float(g_edges[0]), 0.0)
    g_hi = 0.0 if table.kind == "pair" or open_above else min(float(g_edges[1]), 0.0)
    return ClosedForm(table.kind, variable, lo, hi, centre, scale, power, float(u_edges[0]), g_lo,
                      float(u_edges[1]), g_hi, float(table.wall), open_above, error)
