"""cnnsearch as a package: the shipped spaces are package data, `--version`, and what the wheel holds.

The full check (the wheel installed into a fresh venv and run from outside the repository) is
`.ci/package_check`; these tests are the fast part of it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import ROOT, cli_env, run_cli

import cnnsearch
from cnnsearch.space.parse import SHIPPED_SPACES, load_space, resolve_space_path, shipped_space

PACKAGED = files("cnnsearch") / "search_spaces"


def test_the_shipped_space_names_are_the_files_in_the_package() -> None:
    on_disk = {item.name.removesuffix(".toml") for item in PACKAGED.iterdir() if item.name.endswith(".toml")}
    assert set(SHIPPED_SPACES) == on_disk


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_every_shipped_space_resolves_through_importlib_resources_and_loads(name: str) -> None:
    packaged = PACKAGED / f"{name}.toml"
    assert shipped_space(name) == packaged
    assert shipped_space(f"{name}.toml") == packaged
    assert resolve_space_path(name) == packaged
    space = load_space(name)
    assert space.path == str(packaged)
    assert space.dimensions == load_space(ROOT / "search_spaces" / f"{name}.toml").dimensions


def test_the_top_level_search_spaces_is_the_package_folder() -> None:
    # One copy: the documented path search_spaces/default.toml is a symlink into the package.
    link = ROOT / "search_spaces"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "cnnsearch" / "search_spaces").resolve()


def test_version_is_printed_without_importing_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.argv = ["cnnsearch", "--version"]
        from cnnsearch.cli import main
        try:
            main()
        except SystemExit as done:
            print(done.code, "torch" in sys.modules)
        """
    )
    in_process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path
    )
    assert in_process.stdout.splitlines() == [f"cnnsearch {cnnsearch.__version__}", "0 False"]
    as_module = run_cli("--version", cwd=tmp_path)
    assert (as_module.returncode, as_module.stdout, as_module.stderr) == (0, f"cnnsearch {cnnsearch.__version__}\n", "")


def test_a_shipped_space_is_found_from_another_folder(tmp_path: Path) -> None:
    shown = run_cli("space", "show", "default", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "network.stages" in shown.stdout


def test_the_wheel_holds_the_shipped_spaces_and_the_version(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of, so no build/ folder is left in the repository.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "cnnsearch", source / "cnnsearch", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("cnnsearch-*.whl")
    assert wheel.name.startswith(f"cnnsearch-{cnnsearch.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"cnnsearch/search_spaces/{name}.toml" for name in SHIPPED_SPACES} <= names
    assert "cnnsearch/search_spaces/README.md" in names
    metadata = zipfile.ZipFile(wheel).read(f"cnnsearch-{cnnsearch.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {cnnsearch.__version__}\n" in metadata
