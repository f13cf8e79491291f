"""Boltzmann inversion with Jacobians and the fits of every prior (rules in
:mod:`multiscale.cg.priors`). Units: nm, rad, kJ/mol, K."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from multiscale.units import kT as _kT
from multiscale.cg.priors.config import PriorConfig
from multiscale.cg.priors.records import (
    _UNITS,
    AnglePrior,
    BondPrior,
    DihedralPrior,
    Priors,
    RepulsivePrior,
    _label,
)
from multiscale.cg.priors.samples import PriorSamples, collect_samples

#: Angles whose samples come within this distance of π (rad) have their histogram closed at π.
_PI_TOLERANCE = 0.05
#: ... and so do angles reaching within _PI_REACH rad of π whose missing samples above their maximum
#: are explained by the sin θ Jacobian alone (fewer than _PI_EXPECTED_BEYOND expected there at the
#: free energy of the top _PI_EDGE_WINDOW rad): short samples of a soft, near-linear angle.
_PI_REACH = 0.2
_PI_EXPECTED_BEYOND = 3.0
_PI_EDGE_WINDOW = 0.1


# ----------------------------------------------------------------------------------------------
# Boltzmann inversion and fits
# ----------------------------------------------------------------------------------------------


@dataclass
class Inversion:
    """A Boltzmann-inverted histogram: bin ``edges`` and ``centers`` (nm or rad), ``counts``, and
    ``free_energy`` (kJ/mol, minimum 0, NaN in empty bins)."""

    edges: np.ndarray
    centers: np.ndarray
    counts: np.ndarray
    free_energy: np.ndarray


def _bin_jacobian(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Bin average of the Jacobian: r² for bonds/contacts, sin θ for angles, 1 for dihedrals."""
    if kind in ("bond", "contact"):
        return (hi**3 - lo**3) / (3.0 * (hi - lo))
    if kind == "angle":
        return (np.cos(lo) - np.cos(hi)) / (hi - lo)
    if kind == "dihedral":
        return np.ones_like(lo)
    raise ValueError(f"unknown kind {kind!r}; expected 'bond', 'angle', 'dihedral' or 'contact'")


def boltzmann_inversion(
    samples: np.ndarray, kind: str, temperature_K: float, bins: int, value_range: Tuple[float, float]
) -> Inversion:
    """F(x) = −kBT ln[P(x)/J(x)] on a ``bins``-bin histogram over ``value_range``.

    J = r² (kind "bond"/"contact", x in nm), sin θ ("angle", rad), 1 ("dihedral", rad), averaged
    over each bin. Samples outside the range are ignored (they change F only by a constant).
    """
    x = np.asarray(samples, dtype=float).ravel()
    counts, edges = np.histogram(x, bins=int(bins), range=value_range)
    lo, hi = edges[:-1], edges[1:]
    jac = _bin_jacobian(kind, lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = counts / (max(x.size, 1) * (hi - lo) * jac)
        free = np.where(counts > 0, -_kT(temperature_K) * np.log(density), np.nan)
    if np.any(counts > 0):
        free = free - np.nanmin(free)
    return Inversion(edges, 0.5 * (lo + hi), counts, free)


def _check_samples(samples: np.ndarray, label: str, minimum: int, unit: str) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise ValueError(
            f"{label}: {bad} of {x.size} samples are NaN or infinite; remove the corrupted frames "
            "(check positions and boxes) before fitting priors"
        )
    if x.size < minimum:
        raise ValueError(
            f"{label}: only {x.size} samples, at least {minimum} are needed for a Boltzmann inversion; "
            "supply more frames (or lower PriorConfig.min_samples/min_contacts)"
        )
    if x.size and np.ptp(x) <= 0.0:
        raise ValueError(
            f"{label}: all {x.size} samples equal {x[0]:.6g} {unit}, the histogram is empty but for one bin; "
            "the geometry never fluctuates (constrained or mis-mapped beads); check the mapping and index lists"
        )
    return x


def expected_angles_beyond_max(x: np.ndarray, window: float = _PI_EDGE_WINDOW) -> float:
    """How many samples one would expect between the largest sampled angle and π if the free
    energy stayed at its value near that largest angle (rad in, a count out).

    Near π the Jacobian sin θ starves the histogram: with a flat free energy the expected count in
    [θ_max, π] is (n/w)/sin θ_e · (1 + cos θ_max), where n samples lie in the top ``window`` rad
    below θ_max (centre θ_e). A small value means the missing samples near π are explained by the
    geometry alone, so the well may be treated as bounded at π.
    """
    top = float(x.max())
    if top >= math.pi:
        return 0.0
    n = int(np.count_nonzero(x >= top - window))
    centre = top - 0.5 * window
    if math.sin(centre) <= 0.0:
        return 0.0
    return n / window / math.sin(centre) * (1.0 + math.cos(top))


def _harmonic_range(x: np.ndarray, kind: str, tail: float) -> Tuple[float, float, bool]:
    lo, hi = (float(q) for q in np.quantile(x, [tail, 1.0 - tail]))
    closed_at_pi = kind == "angle" and (
        float(x.max()) >= math.pi - _PI_TOLERANCE
        or (float(x.max()) >= math.pi - _PI_REACH and expected_angles_beyond_max(x) < _PI_EXPECTED_BEYOND)
    )
    if closed_at_pi:
        hi = math.pi
    if not hi > lo:
        lo, hi = float(x.min()), float(x.max())
    return lo, hi, closed_at_pi


def fit_harmonic(
    samples: np.ndarray,
    kind: str,
    temperature_K: float,
    config: Optional[PriorConfig] = None,
    types: Sequence[str] = ("?", "?"),
) -> Tuple[float, float]:
    """Fit ½k(x − x0)² to the well of −kBT ln[P(x)/J(x)]; returns (k, x0).

    ``kind`` "bond" (x = r in nm, J = r², k in kJ mol⁻¹ nm⁻²) or "angle" (x = θ in rad,
    J = sin θ, k in kJ mol⁻¹ rad⁻²). Rule and refusals: module docstring. ``types`` only names the
    type tuple in error messages.
    """
    if kind not in _UNITS:
        raise ValueError(f"kind must be 'bond' or 'angle', got {kind!r}")
    config = config or PriorConfig()
    unit, kunit = _UNITS[kind]
    label = _label(kind, types)
    x = _check_samples(samples, label, config.min_samples, unit)
    if kind == "bond" and config.bond_fit == "moments":
        return fit_bond_moments(x, temperature_K, config, types)
    if kind == "angle" and config.angle_fit == "moments":
        return fit_angle_moments(x, temperature_K, config, types)
    lo, hi, closed_at_pi = _harmonic_range(x, kind, config.tail_quantile)
    window = config.fit_window_kT * _kT(temperature_K)
    while True:
        inv = boltzmann_inversion(x, kind, temperature_K, config.bins, (lo, hi))
        free, counts, centers, edges = inv.free_energy, inv.counts, inv.centers, inv.edges
        occupied = counts > 0
        reliable = counts >= 5
        pick = reliable if reliable.any() else occupied
        i0 = int(np.argmin(np.where(pick, free, np.inf)))
        left = i0
        while left > 0 and occupied[left - 1] and free[left - 1] - free[i0] <= window:
            left -= 1
        right = i0
        last = len(counts) - 1
        while right < last and occupied[right + 1] and free[right + 1] - free[i0] <= window:
            right += 1
        if kind == "angle" and not closed_at_pi and right == last and left > 0 and hi >= math.pi - _PI_REACH:
            # a well closed below but still open at its upper edge within _PI_REACH of π: a near-linear
            # angle whose short sample stops short of π; close the range at the geometric bound
            hi, closed_at_pi = math.pi, True
            continue
        break
    open_sides = []
    if left == 0:
        open_sides.append(f"lower edge {lo:.4g} {unit}")
    if right == last and not closed_at_pi:
        open_sides.append(f"upper edge {hi:.4g} {unit}")
    if open_sides:
        raise ValueError(
            f"{label}: no closed well: the Jacobian-corrected free energy stays within "
            f"{config.fit_window_kT:g} kBT of its minimum (at {centers[i0]:.4g} {unit}) up to the "
            f"{' and the '.join(open_sides)} of the sampled range; the distribution is flat, repulsive "
            "or unbound, which a harmonic prior cannot describe. Check the mapping and the bond/angle "
            "list, sample longer, or widen the data (fit_window_kT)"
        )
    n_bins = right - left + 1
    if n_bins < config.min_well_bins:
        raise ValueError(
            f"{label}: the well spans only {n_bins} histogram bins (need {config.min_well_bins}); "
            "supply more samples, or increase PriorConfig.bins"
        )
    sel = slice(left, right + 1)
    dx = centers[sel] - centers[i0]
    weights = np.sqrt(counts[sel].astype(float))
    design = np.stack([dx**2, dx, np.ones_like(dx)], axis=1)
    coef, *_ = np.linalg.lstsq(design * weights[:, None], free[sel] * weights, rcond=None)
    a, b, _ = (float(c) for c in coef)
    k = 2.0 * a
    if not np.isfinite(k) or not np.isfinite(b):
        raise ValueError(f"{label}: the parabola fit returned NaN (k={k}); check the samples")
    at_pi = False
    if closed_at_pi and (k <= 0.0 or centers[i0] - b / (2.0 * a) > math.pi):
        # The free energy falls all the way to the geometric bound θ = π (a near-linear angle): the
        # least-squares parabola with its vertex inside the domain has the vertex on the bound, so
        # refit F = a (θ − π)² + c with θ0 = π fixed.
        dpi = centers[sel] - math.pi
        design_pi = np.stack([dpi**2, np.ones_like(dpi)], axis=1)
        coef_pi, *_ = np.linalg.lstsq(design_pi * weights[:, None], free[sel] * weights, rcond=None)
        k, at_pi = 2.0 * float(coef_pi[0]), True
    if k <= 0.0:
        raise ValueError(
            f"{label}: fitted force constant k = {k:.4g} {kunit} is not positive: the free energy has no "
            "minimum here; check the mapping and the bond/angle list"
        )
    if k < (config.min_bond_k if kind == "bond" else config.min_angle_k):
        floor = config.min_bond_k if kind == "bond" else config.min_angle_k
        raise ValueError(
            f"{label}: fitted force constant k = {k:.4g} {kunit} is below the floor {floor:g} {kunit} "
            f"(harmonic width sqrt(kBT/k) = {math.sqrt(_kT(temperature_K) / k):.3g} {unit}); the distribution "
            "is too broad for a harmonic prior; check the mapping, or lower PriorConfig.min_bond_k/min_angle_k"
        )
    x0 = math.pi if at_pi else centers[i0] - b / (2.0 * a)
    # At θ = π the well is cut by geometry; the vertex of a one-sided fit may land a little beyond π
    # (then clipped to π), by at most a quarter of the well's width.
    upper = edges[right + 1] + (0.25 * (edges[right + 1] - edges[left]) if closed_at_pi else 0.0)
    if not edges[left] <= x0 <= upper:
        raise ValueError(
            f"{label}: fitted minimum x0 = {x0:.4g} {unit} lies outside the fitted well "
            f"[{edges[left]:.4g}, {edges[right + 1]:.4g}] {unit}: the free energy is not parabolic near its "
            "minimum; increase the samples or PriorConfig.bins, or change fit_window_kT"
        )
    if kind == "angle":
        x0 = min(x0, math.pi)
    return float(k), float(x0)


def _weighted_moments(x: np.ndarray, w: np.ndarray) -> Tuple[float, float]:
    """(mean, variance) of samples ``x`` with weights ``w`` (the inverse Jacobian of the moment fits)."""
    mean = float(np.sum(w * x) / np.sum(w))
    return mean, float(np.sum(w * (x - mean) ** 2) / np.sum(w))


def fit_bond_moments(
    samples: np.ndarray,
    temperature_K: float,
    config: Optional[PriorConfig] = None,
    types: Sequence[str] = ("?", "?"),
) -> Tuple[float, float]:
    """Harmonic bond prior from the moments of the Jacobian-corrected distance distribution;
    returns (k kJ mol⁻¹ nm⁻², r0 nm).

    For U = ½k(r − r0)², P(r) ∝ r² exp(−U/kBT), so P(r)/r² is a Gaussian of mean r0 and variance
    kBT/k. Weighting every sample by 1/r² (importance reweighting that removes the r² Jacobian)
    gives r0 = ⟨r⟩_w and k = kBT / ⟨(r − r0)²⟩_w. Unlike the well fit it needs no histogram, so it
    cannot be ill-conditioned; for an anharmonic bond it is the harmonic prior with the same mean and
    width. The ``min_bond_k`` floor still refuses unbound (far too broad) distributions.
    """
    config = config or PriorConfig()
    label = _label("bond", types)
    r = _check_samples(samples, label, config.min_samples, "nm")
    if float(r.min()) <= 0.0:
        raise ValueError(f"{label}: bond lengths must be positive distances in nm, got a minimum of {r.min():.4g}")
    r0, variance = _weighted_moments(r, 1.0 / r**2)
    k = _kT(temperature_K) / variance
    if k < config.min_bond_k:
        raise ValueError(
            f"{label}: moment-fitted force constant k = {k:.4g} kJ mol⁻¹ nm⁻² is below the floor "
            f"{config.min_bond_k:g} kJ mol⁻¹ nm⁻² (width {math.sqrt(variance):.3g} nm): the distribution is too "
            "broad for a bond; check the mapping and the bond list, or lower PriorConfig.min_bond_k"
        )
    return float(k), r0


#: the smallest sin θ of the 1/sin θ Jacobian weights of :func:`fit_angle_moments` (θ within
#: 0.1 rad of 0 or π would otherwise dominate the moments)
_MIN_SIN = math.sin(0.1)


def fit_angle_moments(
    samples: np.ndarray,
    temperature_K: float,
    config: Optional[PriorConfig] = None,
    types: Sequence[str] = ("?", "?", "?"),
) -> Tuple[float, float]:
    """Harmonic angle prior from the moments of the Jacobian-corrected angle distribution;
    returns (k kJ mol⁻¹ rad⁻², θ0 rad).

    For U = ½k(θ − θ0)², P(θ)/sin θ is a Gaussian of mean θ0 and variance kBT/k; weighting each
    sample by 1/sin θ (floored at sin 0.1 rad) gives θ0 = ⟨θ⟩_w and k = kBT / ⟨(θ − θ0)²⟩_w. For
    broad or skewed angles (a lipid's glycerol) it is the harmonic prior with the same mean and
    width, where the well fit finds no parabola. The ``min_angle_k`` floor still applies.
    """
    config = config or PriorConfig()
    label = _label("angle", types)
    theta = _check_samples(samples, label, config.min_samples, "rad")
    theta0, variance = _weighted_moments(theta, 1.0 / np.maximum(np.sin(theta), _MIN_SIN))
    k = _kT(temperature_K) / variance
    if k < config.min_angle_k:
        raise ValueError(
            f"{label}: moment-fitted force constant k = {k:.4g} kJ mol⁻¹ rad⁻² is below the floor "
            f"{config.min_angle_k:g} (width {math.sqrt(variance):.3g} rad): the angle is unrestrained; check the "
            "mapping and the angle list, or lower PriorConfig.min_angle_k"
        )
    return float(k), min(theta0, math.pi)


def fit_torsion(
    samples: np.ndarray,
    temperature_K: float,
    config: Optional[PriorConfig] = None,
    types: Sequence[str] = ("?", "?", "?", "?"),
) -> List[Tuple[int, float, float]]:
    """Fit Σₙ kₙ[1 + cos(nφ − δₙ)] to −kBT ln P(φ) (no Jacobian); returns [(n, δₙ rad, kₙ kJ/mol)].

    Weighted linear least squares over the occupied bins of a ``config.dihedral_bins`` histogram on
    [−π, π); n runs over ``config.dihedral_periodicities``. The additive constant is dropped.
    """
    config = config or PriorConfig()
    label = _label("dihedral", types)
    x = _check_samples(samples, label, config.min_samples, "rad")
    x = np.mod(x + math.pi, 2.0 * math.pi) - math.pi
    inv = boltzmann_inversion(x, "dihedral", temperature_K, config.dihedral_bins, (-math.pi, math.pi))
    occupied = inv.counts > 0
    periods = config.dihedral_periodicities
    n_unknown = 2 * len(periods) + 1
    if occupied.sum() < n_unknown + 2:
        raise ValueError(
            f"{label}: only {int(occupied.sum())} occupied histogram bins for {n_unknown} Fourier coefficients; "
            "supply more samples or increase PriorConfig.dihedral_bins"
        )
    phi = inv.centers[occupied]
    columns = [np.ones_like(phi)]
    for n in periods:
        columns += [np.cos(n * phi), np.sin(n * phi)]
    design = np.stack(columns, axis=1)
    weights = np.sqrt(inv.counts[occupied].astype(float))
    coef, *_ = np.linalg.lstsq(design * weights[:, None], inv.free_energy[occupied] * weights, rcond=None)
    if not np.all(np.isfinite(coef)):
        raise ValueError(f"{label}: the Fourier fit returned NaN; check the samples")
    terms = []
    for m, n in enumerate(periods):
        a, b = float(coef[1 + 2 * m]), float(coef[2 + 2 * m])
        terms.append((int(n), math.atan2(b, a), math.hypot(a, b)))
    return terms


def repulsive_sigma(
    contacts: np.ndarray, config: Optional[PriorConfig] = None, types: Sequence[str] = ("?", "?")
) -> float:
    """σ (nm) of the repulsive prior: the ``config.repulsive_quantile`` quantile of the contacts.

    Refused below ``config.min_contacts`` contacts or when σ < ``config.min_sigma_nm``.
    """
    config = config or PriorConfig()
    label = _label("non-bonded", types)
    x = np.asarray(contacts, dtype=float).ravel()
    if x.size < config.min_contacts:
        raise ValueError(
            f"{label}: only {x.size} close contacts within {config.nonbonded_cutoff_nm:g} nm "
            f"(need {config.min_contacts}) to place the repulsive prior; supply more frames, raise "
            "PriorConfig.nonbonded_cutoff_nm, or lower PriorConfig.min_contacts"
        )
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{label}: {bad} of {x.size} contact distances are NaN or infinite; check positions and boxes")
    sigma = float(np.quantile(x, config.repulsive_quantile))
    if sigma < config.min_sigma_nm:
        raise ValueError(
            f"{label}: repulsive sigma = {sigma:.4g} nm (the {config.repulsive_quantile:g} quantile of the "
            f"contacts) is below the floor {config.min_sigma_nm:g} nm: beads overlap in the data, which points "
            "to a mapping error (two beads on the same atoms?) or a wrong exclusion rule"
        )
    return sigma


def fit_priors_from_samples(
    samples: PriorSamples, temperature_K: float, config: Optional[PriorConfig] = None
) -> Priors:
    """Fit every prior to ``samples`` (from :func:`collect_samples`) at ``temperature_K`` (K).

    All refusals are gathered and raised together as one ValueError, one line per type tuple.
    """
    config = config or PriorConfig()
    if not temperature_K > 0:
        raise ValueError(f"temperature_K must be > 0 K, got {temperature_K!r}")
    priors = Priors(temperature_K=float(temperature_K), exclusion=samples.exclusion,
                    repulsive_form=config.repulsive_form, cutoff_nm=float(samples.cutoff_nm))
    problems: List[str] = []
    for key, values in sorted(samples.bonds.items()):
        try:
            k, r0 = fit_harmonic(values, "bond", temperature_K, config, key)
            priors.bonds[key] = BondPrior(key, k, r0, int(np.size(values)))
        except ValueError as err:
            problems.append(str(err))
    for key, values in sorted(samples.angles.items()):
        try:
            k, theta0 = fit_harmonic(values, "angle", temperature_K, config, key)
            priors.angles[key] = AnglePrior(key, k, theta0, int(np.size(values)))
        except ValueError as err:
            problems.append(str(err))
    if config.use_dihedrals:
        for key, values in sorted(samples.dihedrals.items()):
            try:
                terms = fit_torsion(values, temperature_K, config, key)
                priors.dihedrals[key] = DihedralPrior(key, terms, int(np.size(values)))
            except ValueError as err:
                problems.append(str(err))
    if config.use_repulsive:
        epsilon = config.repulsive_epsilon_kT * _kT(temperature_K)
        for key in sorted(samples.nonbonded_counts):
            values = samples.contacts.get(key, np.zeros(0))
            try:
                sigma = repulsive_sigma(values, config, key)
                priors.repulsive[key] = RepulsivePrior(key, sigma, epsilon, int(np.size(values)))
            except ValueError as err:
                problems.append(str(err))
    if problems:
        raise ValueError(f"{len(problems)} prior fit(s) refused:\n" + "\n".join(problems))
    return priors


def fit_priors(
    positions: np.ndarray,
    bead_types: Sequence[str],
    bonds: Any,
    angles: Any = (),
    dihedrals: Any = (),
    *,
    temperature_K: float,
    boxes: Optional[np.ndarray] = None,
    config: Optional[PriorConfig] = None,
) -> Priors:
    """Collect samples from a CG trajectory (positions nm, boxes nm) and fit all priors at ``temperature_K``."""
    config = config or PriorConfig()
    samples = collect_samples(positions, bead_types, bonds, angles, dihedrals, boxes=boxes, config=config)
    return fit_priors_from_samples(samples, temperature_K, config)


