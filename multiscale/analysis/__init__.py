"""Analysis of simulations: plain functions over arrays or mdtraj Trajectories → numpy/floats."""

from multiscale.analysis.energy import drift_resolution, energy_drift

__all__ = ["energy_drift", "drift_resolution"]
