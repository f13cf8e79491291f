"""Number formatting of the report's Markdown."""

from __future__ import annotations

import math
from typing import Any, Dict


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pm(stats: Dict[str, Any]) -> str:
    return f"{_fmt(stats['mean'])} ± {_fmt(stats['sem'], 2)}"
