"""Starting over: `medlab reset` restores a lesson from the last commit; `medlab cache` lists and clears
the data sets and pretrained weights."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from medlab import cli, reset
from medlab.errors import NotebookError

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture
def checkout(notebook_factory, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    notebook_factory("01_lesson", 'PROFILE = "auto"', "x = 1")
    root = notebook_factory.folder.parent
    for args in (["init", "-q"], ["add", "notebooks"], ["commit", "-q", "-m", "lessons"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return notebook_factory.folder


def test_reset_restores_the_committed_lesson(checkout, capsys):
    lesson = checkout / "01_lesson.ipynb"
    committed = lesson.read_bytes()
    lesson.write_text('{"cells": [], "edited": true}')
    assert cli.main(["reset", "01", "--notebooks", str(checkout)]) == 0
    assert lesson.read_bytes() == committed
    assert "restored" in capsys.readouterr().out


def test_reset_explains_what_to_do_outside_git(notebook_factory):
    notebook_factory("01_lesson", 'PROFILE = "auto"', "x = 1")
    if subprocess.run(["git", "rev-parse"], cwd=notebook_factory.folder, capture_output=True).returncode == 0:
        pytest.skip("the temporary folder lies inside a git checkout")
    with pytest.raises(NotebookError, match="not in a git checkout.*colab.research.google.com"):
        reset.reset_notebook("01", notebook_factory.folder)


def test_reset_refuses_a_lesson_never_committed(checkout):
    (checkout / "02_new.ipynb").write_text((checkout / "01_lesson.ipynb").read_text())
    with pytest.raises(NotebookError, match="not in the last commit"):
        reset.reset_notebook("02", checkout)


def test_cache_lists_and_clears_data_and_weights(tmp_path, monkeypatch, capsys):
    data, torch_home = tmp_path / "data", tmp_path / "torch"
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(data))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    (data / "medmnist").mkdir(parents=True)
    (data / "medmnist" / "pneumoniamnist_64.npz").write_bytes(b"x" * 2048)
    (data / "pretrained").mkdir()
    (data / "pretrained" / "chest-small_cnn-abc.pt").write_bytes(b"w" * 100)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"r" * 10)
    (checkpoints / "someone-elses.pth").write_bytes(b"o")

    kinds = sorted((e.kind, e.path.name) for e in reset.cache_entries())
    assert kinds == [("data", "medmnist"), ("weights", "pretrained"), ("weights", "resnet18-f37072fd.pth")]
    assert cli.main(["cache", "list"]) == 0
    assert "medmnist" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["cache", "clear"]) == 1                                   # asks first
    assert (data / "medmnist").exists()
    assert cli.main(["cache", "clear", "--weights", "--yes"]) == 0
    assert (data / "medmnist").exists() and not (data / "pretrained").exists()
    assert not (checkpoints / "resnet18-f37072fd.pth").exists()
    assert (checkpoints / "someone-elses.pth").exists()                        # not medlab's: left alone
    assert cli.main(["cache", "clear", "--yes"]) == 0
    assert not (data / "medmnist").exists()
    assert cli.main(["cache", "list"]) == 0 and "nothing cached" in capsys.readouterr().out
