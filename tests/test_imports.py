"""Resolving a user's `module:name` and `file.py:name` specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nncompress.errors import ConfigError
from nncompress.imports import import_object, is_import_spec


def test_module_spec_found_in_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usernets_a.py").write_text("def build():\n    return 41\n")
    monkeypatch.chdir(tmp_path)
    assert import_object("usernets_a:build")() == 41


def test_file_spec_and_dotted_attribute(tmp_path: Path) -> None:
    path = tmp_path / "nets.py"
    path.write_text("class Box:\n    class Inner:\n        value = 7\n")
    assert import_object(f"{path}:Box.Inner").value == 7


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
        ("json:no_such_attr", "has no attribute 'no_such_attr'"),
        ("json:1bad", "is not of the form"),
        ("/nonexistent/nets.py:f", "no file"),
    ],
)
def test_errors_name_the_spec(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match="--model") as info:
        import_object(spec, "--model")
    assert words in str(info.value)


def test_failing_import_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        import_object(f"{path}:x")


def test_is_import_spec() -> None:
    assert is_import_spec("pkg.mod:Net") and is_import_spec("nets.py:build")
    assert not is_import_spec("lenet5") and not is_import_spec("pkg:") and not is_import_spec(":x")


def test_without_cwd_search_local_modules_and_files_are_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "usernets_b.py").write_text("def build():\n    return 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no module named 'usernets_b'"):
        import_object("usernets_b:build", search_cwd=False)
    with pytest.raises(ConfigError, match="names a file"):
        import_object(f"{tmp_path / 'usernets_b.py'}:build", search_cwd=False)
    assert import_object("json:dumps", search_cwd=False)([]) == "[]"
