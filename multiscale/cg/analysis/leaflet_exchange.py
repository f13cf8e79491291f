"""Bilayer stability: lipids that leave their leaflet (flip-flop) or the bilayer (escape)."""

from __future__ import annotations

from typing import Dict

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.bilayer import heights


def lipids_leaving_leaflet(traj: md.Trajectory, head_indices, lipids, *, escape_nm: float = 1.5) -> Dict[str, int]:
    """Counts over the run: ``flip_flop``, lipids whose head is on the other side of the mid-plane
    than in the first frame in the last fifth of the run (a lasting change, not a head grazing the
    plane); ``escaped``, lipids whose centre (mean bead height) is farther than ``escape_nm`` outside
    the head planes in any frame (the heads' mean |height| of that frame); ``lost`` = both, each
    lipid counted once."""
    h_heads = heights(traj, head_indices)
    start = np.sign(h_heads[0])
    tail = max(1, traj.n_frames // 5)
    flipped = np.all(np.sign(h_heads[-tail:]) != start[None], axis=0)
    all_h = heights(traj)
    centres = np.stack([all_h[:, np.asarray(lipid)].mean(1) for lipid in lipids], axis=1)
    plane = np.abs(h_heads).mean(1, keepdims=True)
    escaped = np.any(np.abs(centres) > plane + escape_nm, axis=0)
    return {"flip_flop": int(flipped.sum()), "escaped": int(escaped.sum()), "lost": int((flipped | escaped).sum())}
