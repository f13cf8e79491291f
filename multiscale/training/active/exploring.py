"""The explore stage of an active-learning round: Langevin MD driven by the ensemble, in as many
trajectories as the step budget needs (:func:`explore_round`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from multiscale.data.configuration import Configuration
from multiscale.models.ensemble import EnsemblePotential
from multiscale.openmm.exploration import UNCERTAINTY_KEYS, Exploration, explore
from multiscale.training.active.config import ActiveLearningConfig
from multiscale.training.active.frames import _save_frames


def explore_round(
    ensemble: EnsemblePotential,
    topology,
    initial: Sequence[Configuration],
    particle_types: Sequence[str],
    cfg: ActiveLearningConfig,
    r: int,
    round_dir: Path,
    log: Callable[[str], None],
    masses: Optional[Sequence[float]] = None,
) -> Tuple[Exploration, Dict[str, Any]]:
    """Explore round ``r``: trajectories from configurations of ``initial`` drawn with
    ``(cfg.seed, r)`` until ``cfg.md_steps`` steps are used (one, unless one is stopped for its
    uncertainty or a broken bond, or blows up). Writes ``round_dir/explore_t.csv`` per trajectory
    and ``round_dir/explore.npz`` (all frames); returns the frames and the round's summary."""
    rng = np.random.default_rng([cfg.seed, r])
    started = time.monotonic()
    frames = Exploration(steps_requested=cfg.md_steps, trajectories=0)
    starts, errors = [], []
    stops = {"uncertainty": 0, "bond": 0}
    empty_in_a_row = 0
    # trajectories until md_steps are used: one, unless one is stopped (uncertainty, broken
    # bond) or blows up
    while frames.steps_completed < cfg.md_steps:
        t = frames.trajectories
        start = int(rng.integers(len(initial)))
        messages: List[str] = []
        part = explore(
            ensemble,
            topology,
            initial[start].positions,
            particle_types,
            steps=cfg.md_steps - frames.steps_completed,
            report_interval=cfg.report_interval,
            temperature=cfg.temperature_K,
            timestep_fs=cfg.timestep_fs,
            seed=cfg.seed * 1_000_003 + 1000 * r + t,
            friction_per_ps=cfg.friction_per_ps,
            restraint_radius_nm=cfg.restraint_radius_nm,
            restraint_force_constant=cfg.restraint_force_constant,
            restraint_center=cfg.restraint_center,
            stop_uncertainty=cfg.stop_uncertainty_kj_mol_nm,
            score=cfg.uncertainty,
            max_bond_stretch=cfg.max_bond_stretch,
            masses=masses,
            platform=cfg.platform,
            backend=cfg.backend,
            csv_file=round_dir / f"explore_{t}.csv",
            log=messages.append,
        )
        for message in messages:
            log(f"round {r}, trajectory {t}: {message}")
        for frame in part:
            frame["trajectory"] = t
        frames.extend(part)
        starts.append(start)
        frames.trajectories += 1
        # a trajectory that ends before its first report still uses report_interval steps of
        # the budget, so the loop always ends
        frames.steps_completed += max(part.steps_completed, cfg.report_interval)
        frames.blew_up |= part.blew_up
        frames.stopped |= part.stopped
        frames.broken_bond |= part.broken_bond
        stops["uncertainty"] += part.stopped
        stops["bond"] += part.broken_bond
        if part.broken_bond:
            log(f"round {r}, trajectory {t}: ended, {part.stop_reason}")
        if part.error:
            errors.append(f"trajectory {t}: {part.error}")
        empty_in_a_row = 0 if len(part) else empty_in_a_row + 1
        if empty_in_a_row >= 3:
            log(
                f"round {r}: 3 trajectories in a row ended before their first report "
                f"({part.error or 'uncertainty above the stop limit at once'}); giving up on exploring this round — "
                "check the model/platform, or raise stop_uncertainty_kj_mol_nm"
            )
            break
    frames.steps_completed = min(frames.steps_completed, cfg.md_steps)
    frames.error = "; ".join(errors) or None
    _save_frames(round_dir / "explore.npz", frames)
    key = UNCERTAINTY_KEYS[cfg.uncertainty]
    values = np.array([f[key] for f in frames]) if frames else np.zeros(0)
    summary = (
        {
            "explore_start_indices": starts,
            "explore_trajectories": frames.trajectories,
            "explore_frames": len(frames),
            "explore_steps": frames.steps_completed,
            "explore_blew_up": frames.blew_up,
            "explore_error": frames.error,
            "explore_stops_uncertainty": stops["uncertainty"],
            "explore_stops_broken_bond": stops["bond"],
            "explore_mean_uncertainty_kj_mol_nm": float(values.mean()) if values.size else float("nan"),
            "explore_max_uncertainty_kj_mol_nm": float(values.max()) if values.size else float("nan"),
            "explore_seconds": time.monotonic() - started,
        }
    )
    return frames, summary
