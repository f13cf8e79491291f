"""The validation report: one :class:`Check` per test (number, threshold, pass/fail), the
stiffness summary, and their table, JSON and Markdown forms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Check:
    """One check: ``value`` against ``threshold`` (``passed`` is None when it did not apply)."""

    name: str
    category: str
    value: Optional[float]
    threshold: Optional[float]
    passed: Optional[bool]
    unit: str = ""
    detail: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"value": _finite(self.value), "threshold": _finite(self.threshold), "passed": self.passed,
                "category": self.category, "unit": self.unit, "detail": self.detail}

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


@dataclass
class ValidationReport:
    """What :func:`multiscale.validate.validate` found.

    ``checks``: every check in the order run; ``stiffness``: λmax (ps⁻², i.e. kJ mol⁻¹ nm⁻² amu⁻¹)
    of the mass-weighted Hessian, ω_max (ps⁻¹), the period of the stiffest mode and the Verlet
    stability limit 2/ω_max (fs), the recommended step (fs) and the per-configuration values;
    ``path`` and ``nve``: the arrays behind the plot; ``inputs``: what was validated.
    """

    checks: List[Check] = field(default_factory=list)
    stiffness: Dict[str, Any] = field(default_factory=dict)
    path: Dict[str, Any] = field(default_factory=dict)
    nve: Dict[str, Any] = field(default_factory=dict)
    inputs: Dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no check failed (checks that did not apply do not count)."""
        return not self.failed

    @property
    def failed(self) -> List[Check]:
        return [c for c in self.checks if c.passed is False]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; the checks are {[c.name for c in self.checks]}")

    @property
    def recommended_timestep_fs(self) -> Optional[float]:
        return self.stiffness.get("recommended_timestep_fs")

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form: ``stiffness``, then one entry per check (``value``, ``threshold``,
        ``passed``, ...), then ``summary``."""
        out: Dict[str, Any] = {"stiffness": {k: (_finite(v) if isinstance(v, float) else v) for k, v in self.stiffness.items()}}
        for c in self.checks:
            out[c.name] = c.to_dict()
        out["summary"] = {"value": len(self.failed), "threshold": 0, "passed": self.passed,
                          "failed": [c.name for c in self.failed], "inputs": self.inputs}
        return out

    def rows(self) -> List[List[str]]:
        rows = [["check", "value", "threshold", "unit", "result"]]
        for c in self.checks:
            rows.append([c.name, _number(c.value), _number(c.threshold), c.unit, c.status])
        return rows

    def table(self) -> str:
        """The plain-text table printed to the terminal."""
        rows = self.rows()
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.extend(self.stiffness_lines())
        lines.append("")
        verdict = "all checks passed" if self.passed else "FAILED: " + ", ".join(c.name for c in self.failed)
        lines.append(verdict)
        for c in self.failed:
            lines.append(f"  {c.name}: {c.detail}")
        return "\n".join(lines)

    def stiffness_lines(self) -> List[str]:
        s = self.stiffness
        if not s:
            return ["stiffness: not computed"]
        lines = [
            f"stiffest mode: lambda_max {_number(s.get('lambda_max'))} ps^-2, omega_max {_number(s.get('omega_max'))} ps^-1, "
            f"period {_number(s.get('period_fs'))} fs" + (f" ({s['mode']})" if s.get("mode") else ""),
            f"Verlet stability limit 2/omega_max: {_number(s.get('stability_limit_fs'))} fs; "
            f"recommended step: {_number(s.get('recommended_timestep_fs'))} fs "
            f"({s.get('safety_fraction')} of the smallest limit over {len(s.get('configurations', []))} configurations)",
        ]
        if s.get("constrained"):
            lines.append(f"with the System's {s['constrained']} constraints: the stiffest unconstrained mode")
        return lines

    def to_markdown(self) -> str:
        rows = self.rows()
        lines = ["# Validation report", ""]
        if self.inputs:
            lines += [", ".join(f"{k}: `{v}`" for k, v in self.inputs.items()), ""]
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "---|" * len(rows[0]))
        for row in rows[1:]:
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "## Stiffness and time step", ""] + [f"- {line}" for line in self.stiffness_lines()]
        configs = self.stiffness.get("configurations", [])
        if configs:
            lines += ["", "| configuration | lambda_max (ps^-2) | period (fs) | stability limit (fs) |", "|---|---|---|---|"]
            for c in configs:
                lines.append(f"| {c['label']} | {_number(c['lambda_max'])} | {_number(c['period_fs'])} | {_number(c['stability_limit_fs'])} |")
        lines += ["", "## Details", ""]
        for c in self.checks:
            lines.append(f"- **{c.name}** ({c.status}): {c.detail}")
        lines += ["", "Result: " + ("all checks passed." if self.passed else "FAILED (" + ", ".join(c.name for c in self.failed) + ")."), ""]
        return "\n".join(lines)
