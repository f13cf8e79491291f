"""YamlConfig: the shared dict/YAML plumbing of every configuration dataclass in multiscale.

A subclass is a ``@dataclass`` that sets ``SECTION`` (its key in a YAML file, e.g. "model") and
``DESCRIPTION`` (how error messages name it). Unknown keys are refused with the list of known ones,
so a typo in a YAML file never passes silently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Type, TypeVar, Union

import yaml

C = TypeVar("C", bound="YamlConfig")


class YamlConfig:
    SECTION: str = ""
    DESCRIPTION: str = "option"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: Type[C], data: Dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of {cls.DESCRIPTION}s, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.DESCRIPTION}(s) {unknown}; known options are {sorted(known)}")
        required = sorted(
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
        )
        if required:
            raise ValueError(f"{cls.DESCRIPTION}s lack the required {required}")
        return cls(**data)

    @classmethod
    def from_yaml(cls: Type[C], path: Union[str, Path]) -> C:
        """Load from a YAML file holding either the options themselves or a ``SECTION:`` of them."""
        with open(path) as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of {cls.DESCRIPTION}s, got {type(data).__name__}")
        try:
            return cls.from_dict(data.get(cls.SECTION, data) if cls.SECTION else data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None

    def to_yaml(self, path: Union[str, Path]) -> None:
        with open(path, "w") as handle:
            yaml.safe_dump({self.SECTION: self.to_dict()} if self.SECTION else self.to_dict(), handle, sort_keys=False)
