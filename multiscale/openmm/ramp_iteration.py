"""The secant iteration shared by the CG corrections that tune one pair ramp A (1 − r/r_c) until a
short run reproduces a reference value (the NPT density of a melt, the thickness of a bilayer).

Each trial measures the quantity at the current A; A then moves to the root of the straight line
fitted through all trials so far (the relative error against A; with two trials the secant, with
one the guessed slope; the guess again when the fitted slope has the wrong sign: noise), at most
``max_step_kj_mol`` per trial. Short runs are noisy, so the line through every trial is steadier
than the secant of the last two (which chases the noise). A trial meets the tolerance when its
error is within it and so is its noise (its standard error, on the same relative scale): a trial
that lands within 1 % with a ± 2.4 % error bar has not shown that it is there (a quick polymer
job stopped on one such trial at −0.3 %, and its NPT run then read +2.6 %). The result is the
trial that met the tolerance, else the root of the line through all trials when its slope has the right sign and
the root lies within one step of the trials' range, else the trial with the smallest |error|.

Units: kJ/mol.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np


def iterate_ramp(measure: Callable[[float, int], Tuple[float, float]], *, target: float, iterations: int,
                 guess_slope: float, tolerance: float = 0.01, max_step_kj_mol: float = 2.0, value_key: str = "value",
                 scale: Optional[float] = None, log=None, what: str = "iteration") -> Dict:
    """``measure(A, trial)`` → (mean, sem) of the quantity with ramp A. The error is
    (mean − target)/``scale``, relative to the target by default (``scale`` = target; give a
    scale for a target near 0, e.g. a pressure of 1 bar). ``guess_slope``: error change per kJ/mol
    (its sign is the physics: more repulsion, lower density, thicker bilayer, higher pressure).
    Returns ``{"A_kj_mol", "history": [{"A_kj_mol", value_key, "sem", "relative_error"}]}``."""
    if not guess_slope:
        raise ValueError("guess_slope must be non-zero (its sign says which way the ramp moves the quantity)")
    history: List[Dict[str, float]] = []
    A = 0.0
    for trial in range(int(iterations)):
        mean, sem = measure(A, trial)
        error = (mean - target) / (target if scale is None else scale)
        history.append({"A_kj_mol": A, value_key: mean, "sem": sem, "relative_error": error})
        if log is not None:
            log(f"{what} {trial}: A = {A:.3f} kJ/mol -> {mean:.4g} ± {sem:.2g} (target {target:.4g})")
        if abs(error) < tolerance and abs(sem / (target if scale is None else scale)) < tolerance:
            break
        line = _line(history, guess_slope)
        target_A = line[1] if line is not None else A - error / guess_slope
        A = A + float(np.clip(target_A - A, -max_step_kj_mol, max_step_kj_mol))
    else:
        line = _line(history, guess_slope)
        tried = [h["A_kj_mol"] for h in history]
        if line is not None and min(tried) - max_step_kj_mol <= line[1] <= max(tried) + max_step_kj_mol:
            return {"A_kj_mol": float(line[1]), "history": history, "chosen": "root of the line through all trials"}
    best = min(history, key=lambda h: abs(h["relative_error"]))
    return {"A_kj_mol": best["A_kj_mol"], "history": history, "chosen": "trial with the smallest error"}


def _line(history, guess_slope: float):
    """(slope, root) of the least-squares line of relative error against A through the trials,
    or None when there are fewer than two distinct A or the slope's sign is not the guess's."""
    a = np.array([h["A_kj_mol"] for h in history])
    e = np.array([h["relative_error"] for h in history])
    if np.unique(a).size < 2:
        return None
    slope, intercept = np.polyfit(a, e, 1)
    if np.sign(slope) != np.sign(guess_slope):
        return None
    return float(slope), float(-intercept / slope)
