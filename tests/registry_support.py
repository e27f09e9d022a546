"""Helpers for ``tests/test_install.py``: pip dry runs against the real package registries.

* :func:`require_registry` checks that an index answers; without it the test is skipped with
  a loud reason (repeated at the end of the run), unless ``MEDLAB_REQUIRE_REGISTRY=1``
  (``.ci/run`` sets it), which makes it a failure.
* :func:`project_wheel` builds a wheel of this working tree (``pip wheel --no-deps``) from a
  copy of ``pyproject.toml``, ``README.md`` and ``medlab/``: the same name, version and
  dependency metadata a ``git+https://...@tag`` install would read from the published tree,
  without the network.
* :func:`fake_environment` makes a throw-away environment (``venv --without-pip``) whose
  site-packages holds a ``.dist-info`` for each pinned package, so pip sees them as installed,
  as they are in Colab.
* :func:`pip_dry_run` runs ``pip install --dry-run --report`` with this machine's pip
  configuration switched off (no local wheel folders or constraints), and returns the report.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from requirement_support import fail_or_skip

REPO = Path(__file__).resolve().parent.parent
REQUIRE_REGISTRY_ENV = "MEDLAB_REQUIRE_REGISTRY"
PYPI = "https://pypi.org/simple/"
SKIPPED: list[str] = []  # reasons, for the loud line at the end of the run (conftest.py)

# this machine's pip settings that would let local files stand in for the registry
_LOCAL_PIP_SETTINGS = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX",
                       "PIP_REQUIRE_VIRTUALENV", "PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ONLY_BINARY",
                       "PIP_NO_BINARY", "PIP_PYTHON")


def _missing(reason: str) -> None:
    """Fail when the registry is required (CI), else skip loudly: the reason is repeated at the end of the run."""
    fail_or_skip(reason, REQUIRE_REGISTRY_ENV, "the install tests", "INSTALL TEST SKIPPED",
                 "It proves that the Colab set-up cell and Binder's requirements resolve", SKIPPED)


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL") or PYPI


def require_registry(url: str, what: str, timeout: float = 15.0) -> None:
    """Skip (or fail, in CI) unless ``url`` answers an HTTP GET within ``timeout`` seconds."""
    request = urllib.request.Request(url, headers={"User-Agent": "medlab-tests"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, ValueError) as err:
        _missing(f"{what} ({url}) cannot be reached from this machine ({err})")


def pip_environment() -> dict:
    """This process's environment with pip's configuration files and local-file settings switched off."""
    env = {k: v for k, v in os.environ.items() if k not in _LOCAL_PIP_SETTINGS}
    env["PIP_CONFIG_FILE"] = os.devnull  # no /etc/pip.conf, /etc/xdg/pip, ~/.config/pip
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.setdefault("PIP_DEFAULT_TIMEOUT", "60")
    return env


def project_wheel(folder: Path) -> Path:
    """A wheel of this working tree's ``medlab`` (no dependencies bundled)."""
    source = folder / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "medlab", source / "medlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = folder / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "-w", str(dist), str(source)], capture_output=True, text=True, env=pip_environment(),
                          timeout=300)
    assert done.returncode == 0, f"building medlab's wheel failed:\n{done.stdout}\n{done.stderr}"
    wheels = sorted(dist.glob("medlab-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return wheels[0]


def read_pins(path: Path) -> tuple[dict, str | None]:
    """``({name: version}, python)`` from a constraints file (``# python 3.12`` names the Python)."""
    pins, python = {}, None
    for line in path.read_text().splitlines():
        match = re.match(r"#\s*python\s+(\d+\.\d+)\s*$", line.strip())
        if match:
            python = match.group(1)
            continue
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins, python


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fake_environment(folder: Path, pins: dict) -> Path:
    """A venv (no pip) whose site-packages lists ``pins`` as installed; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name, version in pins.items():
        info = site / f"{normalize(name).replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("medlab-tests\n")
        (info / "RECORD").write_text("")
    return python


def pip_dry_run(args: list[str], report: Path, python: Path | None = None, timeout: float = 540) -> dict:
    """``pip install --dry-run --report REPORT ARGS`` (into ``python``'s environment); returns the report.

    Fails the test with pip's own output when pip cannot resolve.
    """
    command = [sys.executable, "-m", "pip"]
    if python is not None:
        command += ["--python", str(python)]
    command += ["install", "--dry-run", "--quiet", "--report", str(report), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=pip_environment(), timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"pip could not resolve:\n$ {' '.join(command)}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}",
                    pytrace=False)
    return json.loads(report.read_text())


def installs(report: dict) -> dict:
    """``{normalized name: version}`` of what a dry-run report would install."""
    return {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in report.get("install", [])}
