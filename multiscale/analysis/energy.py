"""Energy conservation in NVE runs."""

from __future__ import annotations

import numpy as np

from multiscale.units import kT


def energy_drift(times_ps, total_energies_kj_mol, n_dof: int, temperature_K: float) -> float:
    """Drift of the total energy in kT per ns per degree of freedom.

    A straight line is fitted to E_total(t); its slope (kJ/mol/ps) is converted to per-ns and
    divided by N_dof·k_B·T, with N_dof = 3N − N_constraints − 3 (the convention of OpenMM's own
    published figures, e.g. 2.3e-5 kT/ns/dof for ubiquitin in mixed precision at 0.5 fs).
    """
    t = np.asarray(times_ps, dtype=float)
    e = np.asarray(total_energies_kj_mol, dtype=float)
    if t.shape != e.shape or t.size < 3:
        raise ValueError("need at least 3 (time, energy) samples of equal length to fit a drift")
    if n_dof <= 0 or temperature_K <= 0:
        raise ValueError("n_dof and temperature_K must be positive")
    slope_per_ps = np.polyfit(t, e, 1)[0]
    return float(slope_per_ps * 1000.0 / (n_dof * kT(temperature_K)))


def drift_resolution(times_ps, total_energies_kj_mol, n_dof: int, temperature_K: float) -> float:
    """The smallest drift (kT/ns/dof) a run can tell from its own fluctuations: √12 σ / T, with σ the
    RMS residual of E_total about its fitted line and T the run's length. By Cauchy–Schwarz no
    fluctuation of RMS σ over T fakes a larger least-squares slope, however correlated it is
    (Verlet's bounded oscillation of the total energy is), so a larger |drift| is real."""
    t = np.asarray(times_ps, dtype=float)
    e = np.asarray(total_energies_kj_mol, dtype=float)
    if t.shape != e.shape or t.size < 3:
        raise ValueError("need at least 3 (time, energy) samples of equal length to resolve a drift")
    length = float(t[-1] - t[0])
    if length <= 0:
        raise ValueError("the samples span no time")
    sigma = float(np.std(e - np.polyval(np.polyfit(t, e, 1), t)))
    return float(np.sqrt(12.0) * sigma / length * 1000.0 / (n_dof * kT(temperature_K)))
