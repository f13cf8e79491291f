"""Resumable jobs: a folder, the settings that made it, and ordered stages with completion markers.

A long job (coarse-graining a melt, training a potential) is a sequence of stages, each writing
its outputs into the job folder. :class:`ResumableJob` gives every such job the same guarantees:

* **settings fingerprint**: the settings are stored (``settings.json``) when the job starts, and a
  re-run into the same folder with other settings is refused with the list of differences (only
  the settings named ``extendable`` may change, e.g. a longer run); a damaged settings file is
  refused too, never guessed;
* **atomic completion markers**: a stage is done when its marker exists, written atomically (with
  the stage's result as JSON) only after its outputs, so an interrupted stage is never taken for a
  finished one;
* **resume**: a re-run skips finished stages (returning their stored results) and calls the
  interrupted stage again, which resumes from its own checkpoint (the trainer's, CG MD's).

The settings are written only once they have been checked (by the caller, before :meth:`begin`),
so a corrected re-run into the same folder is not refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from multiscale.atomic import atomic_write_json, atomic_write_text

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Stage:
    """One stage: its ``name``, the ``outputs`` it writes (paths relative to the job folder) and
    its completion ``marker`` (relative path; default ``.stages/NAME.done``)."""

    name: str
    outputs: Sequence[str] = ()
    marker: Optional[str] = None


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def settings_differences(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    extendable: Iterable[str] = (),
    added: Optional[Mapping[str, Any]] = None,
) -> List[str]:
    """``["key: old -> new", ...]`` for every setting (nested keys joined by '.') that differs,
    except the ``extendable`` ones.

    ``added`` names settings introduced after older folders were made, each with the value that
    reproduces what those folders did: a stored folder without such a key is taken as having had
    that value, so it resumes under a newer version as long as the current value is the same."""
    old, new = _flatten(stored), _flatten(current)
    for key, value in (added or {}).items():
        old.setdefault(key, json.loads(json.dumps(value)))
    allowed = set(extendable)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if key not in allowed and old.get(key) != new.get(key)]


class ResumableJob:
    """A job folder with stored settings and stage markers (see the module docstring).

    ``settings`` is a JSON-serialisable mapping (nested mappings allowed). ``stages`` lists the
    stages in order (names must be unique). ``extendable`` names the settings that may change
    when the job is resumed; ``added`` names settings introduced since older folders were made,
    with the value that reproduces those folders (see :func:`settings_differences`)."""

    def __init__(
        self,
        directory: PathLike,
        settings: Mapping[str, Any],
        stages: Sequence[Stage] = (),
        *,
        extendable: Iterable[str] = (),
        added: Optional[Mapping[str, Any]] = None,
        settings_file: str = "settings.json",
        what: str = "job",
    ):
        self.directory = Path(directory)
        # stored as JSON: compare in that form (tuples become lists), and refuse settings that
        # cannot be stored, before any work
        self.settings = json.loads(json.dumps(dict(settings)))
        self.stages: Dict[str, Stage] = {}
        self.add_stages(stages)
        self.extendable = tuple(extendable)
        self.added = dict(added or {})
        self.settings_path = self.directory / settings_file
        self.what = what

    # ------------------------------------------------------------------ settings
    def stored_settings(self) -> Optional[Dict[str, Any]]:
        """The settings stored in the folder, None if there are none; a damaged file raises."""
        if not self.settings_path.exists():
            return None
        try:
            stored = json.loads(self.settings_path.read_text())
            if not isinstance(stored, dict):
                raise ValueError("not a mapping")
        except (ValueError, UnicodeDecodeError):
            raise ValueError(
                f"{self.settings_path} is damaged (not the JSON this {self.what} writes), so it is unknown which settings "
                f"made the run in {self.directory}; use a new output folder, or delete that file if you are sure the "
                "settings are the same"
            ) from None
        return stored

    def check_settings(self) -> None:
        """Refuse to resume a folder made with other settings, listing each difference."""
        stored = self.stored_settings()
        if stored is None:
            return
        changes = settings_differences(stored, self.settings, self.extendable, self.added)
        if changes:
            allowed = f" (only {', '.join(self.extendable)} may change, to extend the run)" if self.extendable else ""
            raise ValueError(
                f"{self.directory} holds a run made with other settings ({'; '.join(changes)}); its finished stages "
                f"would be reused. Use a new output folder, or the same settings{allowed}"
            )

    def begin(self) -> "ResumableJob":
        """Check the stored settings, then create the folder and store the settings (atomically)."""
        self.check_settings()
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.settings_path, self.settings)
        return self

    def restart(self) -> "ResumableJob":
        """Start over in the folder: forget every stage marker and store the current settings."""
        for name in self.stages:
            self.marker(name).unlink(missing_ok=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.settings_path, self.settings)
        return self

    # ------------------------------------------------------------------ stages
    def add_stages(self, stages: Sequence[Stage]) -> None:
        """Declare more stages (a job whose length is a setting, e.g. rounds, grows its list);
        re-declaring a stage with the same outputs and marker is allowed, a different one is not."""
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        for stage in stages:
            known = self.stages.get(stage.name)
            if known is not None and known != stage:
                raise ValueError(f"stage {stage.name!r} is already declared differently ({known})")
            self.stages[stage.name] = stage

    def marker(self, name: str) -> Path:
        stage = self.stages[name]
        return self.directory / (stage.marker or f".stages/{name}.done")

    def is_done(self, name: str) -> bool:
        """Whether stage ``name`` finished: its marker exists and so do its declared outputs."""
        stage = self.stages[name]
        return self.marker(name).exists() and all((self.directory / output).exists() for output in stage.outputs)

    def result(self, name: str) -> Any:
        """The result stored with stage ``name``'s marker (JSON; plain text of older markers)."""
        text = self.marker(name).read_text()
        try:
            return json.loads(text)
        except ValueError:
            return text.strip()

    def complete(self, name: str, result: Any = None) -> None:
        """Write stage ``name``'s marker (atomically), holding ``result`` as JSON."""
        stage = self.stages[name]
        missing = [output for output in stage.outputs if not (self.directory / output).exists()]
        if missing:
            raise RuntimeError(f"stage {name!r} finished without writing its outputs {missing}")
        if isinstance(result, str):
            atomic_write_text(self.marker(name), result)
        else:
            atomic_write_json(self.marker(name), result)

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        """Stage ``name``: its stored result when it is done, else ``work()`` (which resumes an
        interrupted attempt from its own checkpoint) followed by the marker."""
        if self.is_done(name):
            return self.result(name)
        result = work()
        self.complete(name, result)
        return result
