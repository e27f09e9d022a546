"""Real data one cell away: the error names the exact command (size included), and in Colab how to
keep the data in Google Drive; `medlab.data.use_google_drive()` mounts Drive as the data folder."""
from __future__ import annotations

import sys
import types

import pytest

import medlab.data
from medlab.data.download import DownloadError, use_google_drive
from medlab.data.sources import load_source
from medlab.errors import DataNotFoundError


def test_missing_medmnist_names_the_exact_fetch_command_for_the_size(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path / "home")
    with pytest.raises(DataNotFoundError) as info:
        load_source("medmnist:pneumoniamnist", size=64)
    message = str(info.value)
    assert "medlab data fetch medmnist:pneumoniamnist --size 64" in message
    assert "medlab.data.fetch('medmnist:pneumoniamnist', size=64)" in message
    assert str(tmp_path / "medmnist") in message and "pneumoniamnist_64.npz" in message
    assert "Google Drive" not in message                                    # not in Colab
    with pytest.raises(DataNotFoundError, match=r"--size 128 --root "):
        load_source("medmnist:pneumoniamnist", root=tmp_path / "elsewhere", size=128)


def test_kaggle_sources_give_the_kaggle_instruction(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"kaggle datasets download -d tawsifurrahman"):
        load_source("covid-radiography")


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    mounted = []
    drive = types.SimpleNamespace(mount=lambda point: mounted.append(point))
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    return mounted


def test_use_google_drive_mounts_and_becomes_the_data_folder(fake_colab, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDLAB_DATA_DIR", raising=False)
    folder = medlab.data.use_google_drive(mount_point=str(tmp_path / "drive"))
    assert fake_colab == [str(tmp_path / "drive")]
    assert folder == tmp_path / "drive" / "MyDrive" / "medlab-data" and folder.is_dir()
    assert medlab.data.data_dir() == folder
    monkeypatch.delenv("MEDLAB_DATA_DIR")


def test_in_colab_the_error_says_how_to_keep_data_in_drive(fake_colab, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"use_google_drive\(\)"):
        load_source("medmnist:pneumoniamnist", size=64)


def test_use_google_drive_outside_colab_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", None)
    with pytest.raises(DownloadError, match="MEDLAB_DATA_DIR"):
        use_google_drive()
