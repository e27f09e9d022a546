"""The installs a learner meets first: the lessons' set-up cell in Colab, and Binder's build.

Both are resolved by pip itself against the real registry (``pip install --dry-run --report``):

* ``test_colab_setup_cell_leaves_colab_alone``: Colab's published pins
  (``tests/colab-constraints.txt``, with its date) are made to look installed in a throw-away
  environment, and the set-up cell's requirement (``medlab.project.install_requirement()``,
  with the ``git+https`` address replaced by a wheel of this working tree, whose metadata is
  what the tag would give) is resolved against them for Colab's Python with ``-c`` the
  constraints file. It must resolve, and must not install torch, torchvision, numpy,
  ipykernel, ipython, any jupyter package, or change any other pinned package.
* ``test_binder_requirements_besides_torch_resolve_on_pypi_without_cuda``: ``binder/requirements.txt``
  plus this project, for the Python in ``binder/runtime.txt``, with PyTorch taken as installed from
  PyTorch's CPU-only index: it must resolve without replacing torch and without CUDA packages
  (Binder has about 2 GB of RAM and no GPU). ``test_binder_torch_comes_from_pytorchs_cpu_index``
  resolves the whole file, torch included, where PyTorch's index can be reached.

They need PyPI. Where it cannot be reached they are skipped with a loud reason, unless
``MEDLAB_REQUIRE_REGISTRY=1`` (``.ci/run``). PyTorch's own index is not required even then:
the last test skips loudly without it.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from medlab import project
from registry_support import (SKIPPED, fake_environment, index_url, installs, normalize, pip_dry_run, project_wheel,
                              read_pins, require_registry)

REPO = Path(__file__).resolve().parent.parent
COLAB_CONSTRAINTS = Path(__file__).resolve().parent / "colab-constraints.txt"
BINDER = REPO / "binder"
KERNEL_STACK = {"torch", "torchvision", "numpy", "ipykernel", "ipython", "notebook", "nbformat", "nbconvert",
                "nbclient", "papermill", "traitlets", "ipywidgets", "widgetsnbextension", "comm", "tornado",
                "pyzmq", "debugpy"}

pytestmark = pytest.mark.timeout(900)


def _forbidden(name: str) -> bool:
    return name in KERNEL_STACK or name.startswith("jupyter") or name.startswith("ipython")


def test_colab_constraints_file_is_dated_and_complete():
    text = COLAB_CONSTRAINTS.read_text()
    assert re.search(r"(January|February|March|April|May|June|July|August|September|October|November|December)"
                     r" \d{4}", text), "say when Colab published these pins"
    pins, python = read_pins(COLAB_CONSTRAINTS)
    assert python, "name Colab's Python with a '# python 3.x' line"
    for name in ("ipykernel", "ipython", "ipywidgets", "traitlets", "torch", "torchvision", "numpy"):
        assert name in pins, f"{name} is missing from {COLAB_CONSTRAINTS.name}"


def test_setup_cell_requirement_is_core_only_and_pinned():
    requirement = Requirement(project.install_requirement())
    assert requirement.name == "medlab" and not requirement.extras, (
        "the set-up cell installs the core layer only: extras would bring the runner or JupyterLab")
    assert requirement.url.endswith(f"@{project.RELEASE_TAG}"), "the set-up cell installs a release tag"


def test_colab_setup_cell_leaves_colab_alone(tmp_path):
    require_registry(index_url() + "pip/", "the Python package index")
    pins, python_version = read_pins(COLAB_CONSTRAINTS)
    wheel = project_wheel(tmp_path / "build")
    colab = fake_environment(tmp_path / "colab", pins)
    requirement = Requirement(project.install_requirement())
    local = f"{requirement.name} @ {wheel.as_uri()}"  # the same metadata as the tag, without git and network
    report = pip_dry_run(["-c", str(COLAB_CONSTRAINTS), "--python-version", python_version,
                          "--only-binary=:all:", local], tmp_path / "report.json", python=colab)
    installed = installs(report)
    assert "medlab" in installed, f"medlab itself is not in pip's plan: {sorted(installed)}"
    touched = sorted(name for name in installed if _forbidden(name) or name in {normalize(p) for p in pins})
    assert not touched, (
        f"in Colab the set-up cell would install or replace {touched} "
        f"({', '.join(f'{n}=={installed[n]}' for n in touched)}); its whole plan: "
        + ", ".join(f"{n}=={v}" for n, v in sorted(installed.items())))


def _binder_requirements() -> tuple[list[str], str]:
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"binder/runtime.txt should read like 'python-3.11', not {runtime!r}"
    return lines, match.group(1)


def test_binder_requirements_besides_torch_resolve_on_pypi_without_cuda(tmp_path):
    """Binder's environment, PyTorch aside, resolves on PyPI for Binder's Python and pulls in no CUDA package.

    PyTorch comes from PyTorch's own CPU wheel index (``binder/requirements.txt``), which this test
    cannot assume it reaches; here torch and torchvision are taken as already installed (as that
    index provides them), so what is checked is that nothing else medlab needs asks for another
    torch or for CUDA. The next test checks the index itself where it is reachable.
    """
    lines, python_version = _binder_requirements()
    require_registry(index_url() + "pip/", "the Python package index")
    assert any(line.startswith("--extra-index-url") and "/whl/cpu" in line for line in lines), (
        "binder/requirements.txt should take torch from PyTorch's CPU-only wheel index")
    binder = fake_environment(tmp_path / "binder", {"torch": "2.11.0", "torchvision": "0.26.0"})
    wheel = project_wheel(tmp_path / "build")
    others = [line for line in lines if not line.startswith("-") and normalize(line) not in ("torch", "torchvision")]
    report = pip_dry_run(["--python-version", python_version, "--only-binary=:all:", *others,
                          f"medlab @ {wheel.as_uri()}"], tmp_path / "report.json", python=binder)
    installed = installs(report)
    assert "medlab" in installed, sorted(installed)
    replaced = sorted(name for name in installed if name in ("torch", "torchvision"))
    assert not replaced, f"Binder's CPU-only torch would be replaced by PyPI's: {replaced}"
    cuda = sorted(name for name in installed if name.startswith("nvidia-") or name == "triton")
    assert not cuda, f"Binder has no GPU and about 2 GB of RAM, but the plan holds CUDA packages: {cuda}"


def test_binder_torch_comes_from_pytorchs_cpu_index(tmp_path):
    """With PyTorch's CPU wheel index reachable, the whole of binder/requirements.txt resolves to CPU-only torch.

    PyTorch's index is not a registry every CI machine reaches, so this test skips loudly (it never
    fails) where it cannot be reached; the previous test covers the rest on PyPI.
    """
    lines, python_version = _binder_requirements()
    for line in lines:
        if line.startswith("--extra-index-url") or line.startswith("--index-url"):
            url = line.split(None, 1)[1].rstrip("/") + "/torch/"
            try:
                require_registry(url, "PyTorch's CPU wheel index, which binder/requirements.txt names")
            except (pytest.fail.Exception, pytest.skip.Exception):  # required is PyPI, not PyTorch's index
                message = (f"INSTALL TEST SKIPPED: PyTorch's CPU wheel index ({url}) cannot be reached from this "
                           "machine, so binder/requirements.txt was resolved only with torch taken as installed")
                SKIPPED.append(message)
                pytest.skip(message)
    require_registry(index_url() + "pip/", "the Python package index")
    wheel = project_wheel(tmp_path / "build")
    report = pip_dry_run(["--ignore-installed", "--python-version", python_version, "--only-binary=:all:",
                          "-r", str(BINDER / "requirements.txt"), f"medlab @ {wheel.as_uri()}"],
                         tmp_path / "report.json")
    installed = installs(report)
    assert "medlab" in installed and "torch" in installed, sorted(installed)
    cuda = sorted(name for name in installed if name.startswith("nvidia-") or name == "triton")
    assert not cuda, f"Binder has no GPU and about 2 GB of RAM, but the plan holds CUDA packages: {cuda}"
    assert installed["torch"].endswith("+cpu"), f"torch {installed['torch']} is not PyTorch's CPU-only build"


def test_constraints_python_is_not_this_python_by_accident():
    """The Colab check resolves for Colab's Python even when this one differs (pip's --python-version)."""
    _, python_version = read_pins(COLAB_CONSTRAINTS)
    assert re.fullmatch(r"3\.\d+", python_version)
    assert sys.version_info >= (3, 10)
