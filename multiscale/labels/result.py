"""LabelResult: what a labeller returns — the labelled configurations and, by index, the failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from multiscale.data.configuration import Configuration


@dataclass
class LabelResult:
    """Outcome of labelling a sequence of configurations.

    Attributes
    ----------
    configurations: the successfully labelled configurations, in input order; each carries
        ``info["label_index"]`` (its index in the input) and ``info["labeller"]``.
    indices: input index of each entry of ``configurations``.
    failures: ``(input index, error message)`` for every configuration that could not be labelled.
    """

    configurations: List[Configuration] = field(default_factory=list)
    indices: List[int] = field(default_factory=list)
    failures: List[Tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.configurations) != len(self.indices):
            raise ValueError(
                f"LabelResult needs one index per configuration, got {len(self.configurations)} "
                f"configurations and {len(self.indices)} indices"
            )

    @property
    def succeeded(self) -> bool:
        """True when no configuration failed."""
        return not self.failures

    def raise_on_failure(self) -> "LabelResult":
        """Raise RuntimeError listing every failed index and its message; return self otherwise."""
        if self.failures:
            lines = "\n".join(f"  configuration {index}: {message}" for index, message in self.failures)
            raise RuntimeError(
                f"{len(self.failures)} of {len(self.failures) + len(self.indices)} configurations "
                f"failed to label (indices {[index for index, _ in self.failures]}):\n{lines}"
            )
        return self
