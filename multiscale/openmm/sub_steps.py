"""The bonded sub-steps of a job's CG runs, one more each time a run boils at the current count.

Why: a CG model's stiffest terms are its bonded tables, whose stiffness is the reference's (a
narrow bond distribution Boltzmann-inverts to a steep well) and grows as iterative refinements
sharpen them. Measured on the membrane job's tabulated models at 30 fs: DMPC's held 303 K
through every stage; DLPC's heated to 510 K in its control run's 8,000th step, after three
revisions of its bonded tables, and 800 K within 3 ps on its final tables; DPPC's (a gel)
boiled at once. With the bonded forces on two 15 fs sub-steps (multiple time stepping,
:mod:`multiscale.openmm.mts`; the pairs, the costly part, keep the full step) both held 290–330 K.
A short trial of the fitted model does not foresee this (DLPC's fitted tables held 306 K), and a
step short enough for the stiffest model costs every other one 2–3× in speed. So the count is
found as the job goes: a run that boils (:class:`~multiscale.openmm.overheating.OverheatingError`,
or :class:`~multiscale.openmm.cg_simulation.CGInstabilityError` once its restarts are spent) is
redone with one sub-step more, up to a maximum, and the count is kept in a JSON file so that a
resumed job goes on with it.

Units: ps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, TypeVar

from multiscale.atomic import atomic_write_json
from multiscale.openmm.cg_simulation import CGInstabilityError, error_summary
from multiscale.openmm.overheating import OverheatingError

#: the most bonded sub-steps per CG step
MAX_INNER_STEPS = 4

T = TypeVar("T")


class BondedSubSteps:
    """The bonded sub-steps (``inner_steps``) per CG step of ``timestep_ps``, starting at ``start``
    or at the count stored in ``path`` by an earlier attempt, raised by one (at most ``maximum``)
    when :meth:`run`'s attempt boils; with ``adaptive`` False the count stays and a boiling run
    raises."""

    def __init__(self, path, start: int, timestep_ps: float, *, maximum: int = MAX_INNER_STEPS, adaptive: bool = True,
                 log: Optional[Callable[[str], None]] = None):
        if isinstance(start, bool) or int(start) != start or not 1 <= int(start) <= int(maximum):
            raise ValueError(f"start={start!r} must be a whole number of sub-steps in [1, {maximum}]")
        self.path = Path(path)
        self.timestep_ps = float(timestep_ps)
        self.maximum = int(maximum)
        self.adaptive = bool(adaptive)
        self.log = log
        self.state = {"inner_steps": int(start), "escalations": []}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if not isinstance(stored, dict) or not isinstance(stored.get("inner_steps"), int):
                raise ValueError(f"{self.path} is not a sub-step record; delete it to start from {start}")
            self.state = {"inner_steps": max(int(start), stored["inner_steps"]),
                          "escalations": list(stored.get("escalations", []))}

    @property
    def inner_steps(self) -> int:
        return int(self.state["inner_steps"])

    def run(self, what: str, attempt: Callable[[], T], before_retry: Optional[Callable[[], None]] = None) -> T:
        """``attempt()`` (which reads :attr:`inner_steps`); when it boils, one sub-step more and
        ``before_retry()`` (e.g. removing a checkpoint made with the other integrator), then again."""
        while True:
            try:
                return attempt()
            except (OverheatingError, CGInstabilityError) as error:
                n = self.inner_steps
                if not self.adaptive or n >= self.maximum:
                    raise
                self.state["inner_steps"] = n + 1
                self.state["escalations"].append({"run": what, "from": n, "to": n + 1, "why": error_summary(error)})
                atomic_write_json(self.path, self.state)
                if self.log is not None:
                    self.log(f"{what} heated with the bonded terms on {n} sub-step{'s' if n > 1 else ''} "
                             f"({error_summary(error, 160)}); redoing it with {n + 1} sub-steps of "
                             f"{self.timestep_ps * 1000 / (n + 1):.3g} fs (the pair forces keep {self.timestep_ps * 1000:g} fs)")
                if before_retry is not None:
                    before_retry()

    def to_dict(self) -> dict:
        return {"inner_steps": self.inner_steps, "timestep_ps": self.timestep_ps, "maximum": self.maximum,
                "adaptive": self.adaptive, "escalations": list(self.state["escalations"])}


__all__ = ["MAX_INNER_STEPS", "BondedSubSteps"]
