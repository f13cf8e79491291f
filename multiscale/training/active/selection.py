"""Which explored frames to label: the most uncertain ones, spread out in time."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


# MD exploration builds and runs OpenMM Systems, so it lives in the OpenMM layer (re-exported here)

PathLike = Union[str, "os.PathLike[str]"]



def select_most_uncertain(
    frames: Sequence[Dict[str, Any]],
    n: int,
    min_separation_steps: int = 0,
    key: str = "max_force_uncertainty",
    max_uncertainty: Optional[float] = None,
) -> List[int]:
    """Indices of (at most) ``n`` frames with the largest ``frame[key]``, greedily, in order of
    decreasing uncertainty: a frame is taken only if its ``step`` is at least
    ``min_separation_steps`` away from every frame already taken from the same trajectory
    (``frame["trajectory"]``, default 0), so near-duplicates of a taken frame are skipped. Ties
    keep the earlier frame first. Frames with a non-finite uncertainty, or one above
    ``max_uncertainty`` (a trust ceiling, None: none), are never taken. Fewer than ``n`` indices
    come back when too few frames qualify.
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    if isinstance(min_separation_steps, bool) or int(min_separation_steps) != min_separation_steps or min_separation_steps < 0:
        raise ValueError(f"min_separation_steps must be a whole number >= 0, got {min_separation_steps!r}")
    scores = []
    for index, frame in enumerate(frames):
        if key not in frame or "step" not in frame:
            raise KeyError(f"frame {index} has no {key!r} or 'step' entry; frames come from explore() (keys {sorted(frame)})")
        value = float(frame[key])
        if math.isfinite(value) and (max_uncertainty is None or value <= max_uncertainty):
            scores.append((value, index))
    order = sorted(scores, key=lambda item: (-item[0], item[1]))
    chosen: List[int] = []
    taken: List[Tuple[Any, int]] = []
    for _, index in order:
        if len(chosen) >= n:
            break
        step, trajectory = int(frames[index]["step"]), frames[index].get("trajectory", 0)
        if all(t != trajectory or abs(step - other) >= min_separation_steps for t, other in taken):
            chosen.append(index)
            taken.append((trajectory, step))
    return chosen

