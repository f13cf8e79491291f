"""The resumable job folder: which stored settings it resumes and which it refuses."""

import json

import pytest

from multiscale.jobs import ResumableJob, Stage, settings_differences


def test_changed_settings_are_listed_and_extendable_ones_are_not():
    stored = {"steps": 10, "model": {"cutoff": 1.0, "lmax": 2}}
    current = {"steps": 20, "model": {"cutoff": 1.2, "lmax": 2}, "seed": 3}
    assert settings_differences(stored, current) == ["model.cutoff: 1.0 -> 1.2", "seed: None -> 3", "steps: 10 -> 20"]
    assert settings_differences(stored, current, extendable=["steps"]) == ["model.cutoff: 1.0 -> 1.2", "seed: None -> 3"]


def test_a_setting_added_later_resumes_an_older_folder_only_at_the_value_older_folders_had(tmp_path):
    stages = [Stage("first", outputs=("a.txt",))]
    old = ResumableJob(tmp_path, {"steps": 10}, stages).begin()
    (tmp_path / "a.txt").write_text("done")
    old.complete("first", {"value": 1})

    # a newer version adds "rounds"; 0 is what the older version did
    newer = ResumableJob(tmp_path, {"steps": 10, "rounds": 0}, stages, added={"rounds": 0}).begin()
    assert newer.is_done("first") and newer.result("first") == {"value": 1}
    assert json.loads((tmp_path / "settings.json").read_text()) == {"steps": 10, "rounds": 0}

    # without the registry, or with another value, the folder is refused and the difference named
    (tmp_path / "settings.json").write_text(json.dumps({"steps": 10}))
    with pytest.raises(ValueError, match=r"rounds: None -> 0"):
        ResumableJob(tmp_path, {"steps": 10, "rounds": 0}, stages).begin()
    with pytest.raises(ValueError, match=r"rounds: 0 -> 2"):
        ResumableJob(tmp_path, {"steps": 10, "rounds": 2}, stages, added={"rounds": 0}).begin()
    # a stored value always wins over the registry's
    (tmp_path / "settings.json").write_text(json.dumps({"steps": 10, "rounds": 2}))
    with pytest.raises(ValueError, match=r"rounds: 2 -> 0"):
        ResumableJob(tmp_path, {"steps": 10, "rounds": 0}, stages, added={"rounds": 0}).begin()


def test_nested_added_settings_use_dotted_names(tmp_path):
    ResumableJob(tmp_path, {"cg": {"steps": 5}}).begin()
    ResumableJob(tmp_path, {"cg": {"steps": 5, "tuple": (1, 2)}}, added={"cg.tuple": (1, 2)}).begin()
    assert json.loads((tmp_path / "settings.json").read_text()) == {"cg": {"steps": 5, "tuple": [1, 2]}}


def test_a_damaged_settings_file_is_refused_not_guessed(tmp_path):
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(ValueError, match="is damaged"):
        ResumableJob(tmp_path, {"steps": 1}, added={"steps": 1}).begin()
