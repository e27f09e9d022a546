"""Starting over: a lesson back to its committed state, and the data and weights caches emptied.

* :func:`reset_notebook` (``medlab reset 01``): writes the lesson as it is in the last commit
  of the git checkout it belongs to (``git show HEAD:<path>``); the learner's edits and outputs
  are lost. Outside a git checkout (a notebook opened in Colab from its badge) it says how to
  get the published copy again.
* :func:`cache_entries` / :func:`clear_cache` (``medlab cache list``, ``medlab cache clear``):
  the data sets under ``MEDLAB_DATA_DIR``, the weights medlab pretrained on phantoms
  (``MEDLAB_DATA_DIR/pretrained``) and the ImageNet weights torchvision downloaded for the
  classifiers medlab builds (``$TORCH_HOME/hub/checkpoints``; other files there are left alone).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import NotebookError, ParameterError

__all__ = ["reset_notebook", "CacheEntry", "cache_entries", "clear_cache"]


def _git(args, cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NotebookError(f"git could not run ({err}); install git, or fetch the lesson again "
                            f"(see the README's 'Starting over')") from err


def reset_notebook(name: str, folder=None) -> Path:
    """Restore lesson ``name`` (a number, stem, file name or path) to its last committed version.

    Returns the path written.

    Raises:
        NotebookError: the lesson is unknown, is not in a git checkout, or was never committed;
            the message says how to get a clean copy instead.
    """
    from .project import colab_url
    from .runner import find_notebook

    path = find_notebook(name, folder)
    top = _git(["rev-parse", "--show-toplevel"], path.parent)
    if top.returncode != 0:
        raise NotebookError(
            f"{path} is not in a git checkout, so there is no committed copy here to restore. "
            f"Open the published lesson again ({colab_url(path.name)}), or clone the repository.")
    root = Path(top.stdout.decode().strip())
    relative = path.resolve().relative_to(root.resolve()).as_posix()
    committed = _git(["show", f"HEAD:{relative}"], root)
    if committed.returncode != 0:
        raise NotebookError(f"{relative} is not in the last commit ({committed.stderr.decode().strip()}); "
                            "nothing to restore it to")
    path.write_bytes(committed.stdout)
    return path


@dataclass
class CacheEntry:
    """One thing ``medlab cache clear`` deletes."""

    kind: str  # "data", "weights"
    path: Path
    size_bytes: int


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _torchvision_weight_files() -> list[Path]:
    """ImageNet weight files of the classifiers medlab builds, in torch's hub cache (those present)."""
    try:
        import torch
        from torchvision.models import get_model_weights

        from .models.classifiers import TORCHVISION_CLASSIFIERS
    except ImportError:
        return []
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    files = []
    for name in TORCHVISION_CLASSIFIERS:
        try:
            url = get_model_weights(name).DEFAULT.url
        except (ValueError, AttributeError):
            continue
        candidate = folder / os.path.basename(url)
        if candidate.exists():
            files.append(candidate)
    return files


def cache_entries(data: bool = True, weights: bool = True) -> list[CacheEntry]:
    """What is cached: data sets and medlab's weights under ``MEDLAB_DATA_DIR``, torchvision's ImageNet files."""
    from .data.download import data_dir

    root = data_dir()
    entries = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            kind = "weights" if child.name == "pretrained" else "data"
            if (kind == "data" and data) or (kind == "weights" and weights):
                entries.append(CacheEntry(kind, child, _size(child)))
    if weights:
        entries += [CacheEntry("weights", p, _size(p)) for p in _torchvision_weight_files()]
    return entries


def clear_cache(data: bool = True, weights: bool = True) -> list[CacheEntry]:
    """Delete what :func:`cache_entries` lists; returns what was deleted."""
    if not (data or weights):
        raise ParameterError("nothing to clear: choose data, weights or both")
    entries = cache_entries(data, weights)
    for entry in entries:
        if entry.path.is_dir() and not entry.path.is_symlink():
            shutil.rmtree(entry.path)
        else:
            entry.path.unlink(missing_ok=True)
    return entries
