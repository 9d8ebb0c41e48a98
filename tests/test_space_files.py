"""The files a Hugging Face Space reads: README front matter, requirements.txt, packages.txt."""

from __future__ import annotations

import tomllib
from pathlib import Path

import gradio
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SPACE_ONLY = {"spaces", "authlib", "itsdangerous"}  # ZeroGPU and gradio's oauth extra


def _front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must open with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n")[1])


def test_readme_front_matter_runs_app_py_on_the_gradio_we_test():
    meta = _front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gradio.__version__
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["hf_oauth"] is True  # "Sign in with Hugging Face" makes the owner
    assert len(meta["short_description"]) <= 60


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {r.name.lower(): r for r in reqs if r.name != "gradio"}


def _space_requirements() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {r.name.lower(): r for r in reqs}


def test_space_requirements_match_the_package_dependencies():
    space, package = _space_requirements(), _pyproject_requirements()
    assert set(space) - SPACE_ONLY == set(package)
    for name, req in package.items():
        assert str(space[name]) == str(req), name


def test_space_installs_the_allocator_cpu_training_uses():
    assert "libtcmalloc-minimal4" in (ROOT / "packages.txt").read_text().split()
