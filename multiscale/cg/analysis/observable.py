"""The observable contract of the validation report.

An :class:`Observable` compares one kind of quantity between the mapped reference and a CG run.
:func:`multiscale.cg.analysis.validation_report` calls each observable of its list in turn, so a
new system (a membrane: area per lipid, thickness, density profiles) adds its own observables
without touching the polymer ones. An observable returns a :class:`Comparison`: the report
entries it owns, its settings, and its PNG plots; it renders its own Markdown from the finished
(JSON) report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import mdtraj as md

from multiscale.cg.analysis.beads import Masses


@dataclass
class ReportContext:
    """What every observable may use: ``masses`` (amu per bead or ``{type: amu}``), ``types`` (one
    type per bead, or None for the atom names) and ``sem_blocks`` (blocks of :func:`block_sem`)."""

    masses: Masses
    types: Optional[Sequence[str]] = None
    sem_blocks: int = 10


@dataclass
class Comparison:
    """An observable's contribution to the report: ``entries`` (report key → JSON-able value, in
    report order), ``settings`` (merged into the report's ``settings``) and ``plots`` (file name →
    PNG bytes, or None when there is nothing to plot)."""

    entries: Dict[str, Any] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    plots: Dict[str, Optional[bytes]] = field(default_factory=dict)


class Observable:
    """One compared quantity. Subclasses set ``title`` and implement :meth:`compare`; they may
    override :meth:`check` (refuse bad input before any work), :meth:`markdown` (a section of its
    own) and :meth:`table_rows` (rows of the report's table ``| quantity | reference | CG | CG vs
    ref (%) |``)."""

    #: What the observable is called in the report's headings.
    title: str = ""

    def check(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> None:
        """Refuse bad input before any observable starts its work (default: nothing to check)."""

    def compare(self, ref: md.Trajectory, cg: md.Trajectory, context: ReportContext) -> Comparison:
        raise NotImplementedError(f"{type(self).__name__} must implement compare(ref, cg, context)")

    def markdown(self, report: Dict[str, Any]) -> List[str]:
        """Markdown lines of its own section (default: none)."""
        return []

    def table_rows(self, report: Dict[str, Any]) -> List[str]:
        """Rows of the report's table of scalar quantities (default: none)."""
        return []

