"""YamlConfig: the shared dict/YAML plumbing of every configuration dataclass in multiscale.

A subclass is a ``@dataclass`` that sets ``SECTION`` (its key in a YAML file, e.g. "model") and
``DESCRIPTION`` (how error messages name it). Unknown keys are refused with the list of known ones,
so a typo in a YAML file never passes silently.

Every field is type-checked against its annotation when the dataclass is built (directly, from a
dict or from YAML), before the subclass's own ``__post_init__`` checks run: an ``int`` field
refuses 2.7 and "8" (an integral float such as 8.0 becomes 8), a ``float`` field refuses "20fs",
NaN and True, a ``bool`` field refuses the string "False", a ``List[str]`` refuses a bare string
such as "NaCl" (it would otherwise become four names). The message names the field, what it
expects and what it got.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Type, TypeVar, Union

import yaml

C = TypeVar("C", bound="YamlConfig")


class ConfigTypeError(ValueError):
    """A configuration field holds a value of the wrong kind (e.g. a string where a number belongs)."""


_NOT_CHECKED = object()


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the annotation ``hint`` (and normalised: tuples → lists, integral
    floats → int, ints → float); raises ConfigTypeError naming ``where``. Annotations this checker
    does not understand (nested config classes, arrays) are passed through for the class's own
    checks."""
    if hint is Any or hint is _NOT_CHECKED:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        alternatives = [a for a in args if a is not type(None)]
        errors = []
        for alternative in alternatives:
            try:
                return _check(value, alternative, where)
            except ConfigTypeError as err:
                errors.append(str(err))
        if value is None:
            raise ConfigTypeError(f"{where} must be set (got null/None)")
        raise ConfigTypeError(errors[0] if len(errors) == 1 else f"{where}: none of the accepted forms fits {_describe(value)}")
    if origin in (list, tuple, typing.List, typing.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigTypeError(f"{where} must be a list, got {_describe(value)}")
        inner = args[0] if args and args[0] is not Ellipsis else Any
        return [_check(item, inner, f"{where}[{k}]") for k, item in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ConfigTypeError(f"{where} must be a mapping, got {_describe(value)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        raise ConfigTypeError(f"{where} must be true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigTypeError(f"{where} must be a whole number, got {_describe(value)}")
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(float(value)) and float(value).is_integer():
            return int(value)
        raise ConfigTypeError(f"{where} must be a whole number, got {_describe(value)}")
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string: accept a string that is a plain number,
            # and nothing else ("20fs", "0.5nm" are refused below)
            try:
                value = float(value.strip())
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigTypeError(
                f"{where} must be a number, got {_describe(value)}; give a plain number in the unit the "
                "field documents (a *_ps field takes 0.02 for 20 fs, a *_nm field 0.5 for 5 Å)"
            )
        if not math.isfinite(float(value)):
            raise ConfigTypeError(f"{where} must be a finite number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigTypeError(f"{where} must be a string, got {_describe(value)}")
        return value
    return value


@functools.lru_cache(maxsize=None)
def _field_hints(cls) -> Dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved is left to the class's own checks
        hints = {}
    return {f.name: hints.get(f.name, _NOT_CHECKED) for f in dataclasses.fields(cls)}


def check_field_types(config) -> None:
    """Check (and normalise in place) every field of the dataclass ``config`` against its annotation."""
    description = getattr(config, "DESCRIPTION", "option")
    for name, hint in _field_hints(type(config)).items():
        value = getattr(config, name)
        setattr(config, name, _check(value, hint, f"{description} {name}"))


class YamlConfig:
    SECTION: str = ""
    DESCRIPTION: str = "option"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_checks_types", False):

            @functools.wraps(own)
            def __post_init__(self, _own=own):
                check_field_types(self)
                _own(self)

            __post_init__._checks_types = True
            cls.__post_init__ = __post_init__

    def __post_init__(self) -> None:
        check_field_types(self)

    __post_init__._checks_types = True

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
    def from_yaml(cls: Type[C], path: Union[str, Path], base: Optional[C] = None) -> C:
        """Load from a YAML file holding either the options themselves or a ``SECTION:`` of them.
        With ``base`` (a preset), the file overrides only the options it names."""
        data = read_yaml(path)
        try:
            if cls.SECTION and cls.SECTION in data:
                section = data[cls.SECTION]
                if section is None:
                    raise ValueError(
                        f"the section {cls.SECTION}: is empty; give its {cls.DESCRIPTION}s, or delete the section line"
                    )
                if not isinstance(section, dict):
                    raise ValueError(f"the section {cls.SECTION}: must hold option: value lines")
                data = section
            if base is not None:
                if not isinstance(base, cls):
                    raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
                data = {**base.to_dict(), **data}
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None

    def to_yaml(self, path: Union[str, Path]) -> None:
        with open(path, "w") as handle:
            yaml.safe_dump({self.SECTION: self.to_dict()} if self.SECTION else self.to_dict(), handle, sort_keys=False)


def read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """The mapping in a YAML file; a missing file, a syntax error (with its line) or a file that
    holds no mapping raises ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: YAML syntax error{where}: {problem}; fix the file (YAML is indentation-sensitive)") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (YAML) file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings (key: value lines), got {type(data).__name__}")
    return data
