"""Downloads and archives: checksums, interrupted transfers, offline machines, malicious archives."""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medlab.data import download as D
from medlab.data.cli import main as data_cli


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------
# data_dir


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path / "mine"))
    assert D.data_dir() == tmp_path / "mine" and not (tmp_path / "mine").exists()
    assert D.data_dir(create=True).is_dir()
    assert D.source_dir("medmnist:pneumoniamnist") == tmp_path / "mine" / "medmnist"
    monkeypatch.delenv("MEDLAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert D.data_dir() == tmp_path / "cache" / "medlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert D.data_dir() == Path.home() / ".cache" / "medlab"


# ---------------------------------------------------------------------------------------------
# downloads


@pytest.fixture
def payload(tmp_path):
    data = os.urandom(300_000)
    src = tmp_path / "served" / "file.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    return src, "sha256:" + hashlib.sha256(data).hexdigest(), "md5:" + hashlib.md5(data).hexdigest()


def test_download_verifies_checksum_and_writes_atomically(payload, tmp_path):
    src, sha, md5 = payload
    dest = tmp_path / "out" / "file.bin"
    assert D.download(src.as_uri(), dest, checksum=sha, progress=False) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert D.verify_checksum(dest, md5) and D.verify_checksum(dest, md5.split(":")[1])
    # an existing file with the right checksum is kept: no transfer (the URL would fail)
    assert D.download("file:///nonexistent/nothing", dest, checksum=sha, progress=False) == dest


def test_checksum_mismatch_leaves_nothing_behind(payload, tmp_path):
    src, _, _ = payload
    out = tmp_path / "out"
    with pytest.raises(D.ChecksumError, match="checksum mismatch"):
        D.download(src.as_uri(), out / "file.bin", checksum="sha256:" + "0" * 64, progress=False)
    assert _listing(out) == set()  # no file, no temporary .part
    # a previous good copy is not replaced by a bad download
    (out / "keep.bin").write_bytes(b"old")
    with pytest.raises(D.ChecksumError):
        D.download(src.as_uri(), out / "keep.bin", checksum="md5:" + "1" * 32, progress=False, overwrite=True)
    assert (out / "keep.bin").read_bytes() == b"old" and _listing(out) == {"keep.bin"}


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"x" * 200_000

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path == "/short":  # announce more than is sent, then hang up: an interrupted transfer
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body) * 2))
            self.end_headers()
            self.wfile.write(self.body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        else:
            self.send_error(404)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_download_interrupted_and_not_found(server, tmp_path):
    ok = D.download(server + "/ok", tmp_path / "ok.bin", progress=False)
    assert ok.stat().st_size == len(_Handler.body)
    with pytest.raises(D.DownloadError, match="interrupted"):
        D.download(server + "/short", tmp_path / "short.bin", progress=False, timeout=5)
    with pytest.raises(D.DownloadError, match="404"):
        D.download(server + "/missing", tmp_path / "missing.bin", progress=False)
    assert _listing(tmp_path) == {"ok.bin"}  # no partial file looks complete


def test_offline_fails_fast_with_manual_instructions(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.npz"
    t = time.perf_counter()
    with pytest.raises(D.DownloadError) as err:
        D.download(url, tmp_path / "data.npz", progress=False)
    assert time.perf_counter() - t < 10
    assert "offline" in str(err.value) and str(tmp_path / "data.npz") in str(err.value) and url in str(err.value)
    monkeypatch.setenv("MEDLAB_OFFLINE", "1")
    with pytest.raises(D.DownloadError, match="MEDLAB_OFFLINE"):
        D.download("https://zenodo.org/records/1/files/x.npz", tmp_path / "x.npz", progress=False)
    assert _listing(tmp_path) == set()


# ---------------------------------------------------------------------------------------------
# archives


def _tar(path: Path, members):
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            kind = m.get("type", "file")
            if kind == "file":
                data = m.get("data", b"data")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = m["target"]
                tf.addfile(info)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = m["target"]
                tf.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)
    return path


def _zip(path: Path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for m in members:
            if m.get("type") == "symlink":
                info = zipfile.ZipInfo(m["name"])
                info.external_attr = (0o120777 << 16)
                zf.writestr(info, m["target"])
            else:
                zf.writestr(m["name"], m.get("data", b"data"))
    return path


def test_good_archives_extract_with_internal_links(tmp_path):
    target = tmp_path / "t"
    arc = _tar(tmp_path / "good.tar.gz", [
        {"name": "pkg", "type": "dir"}, {"name": "pkg/a.txt", "data": b"A"},
        {"name": "pkg/sub/b.txt", "data": b"B"}, {"name": "pkg/link", "type": "symlink", "target": "sub/b.txt"},
        {"name": "pkg/hard", "type": "hardlink", "target": "pkg/a.txt"}])
    created = D.extract(arc, target)
    assert created == [target / "pkg"]
    assert (target / "pkg" / "link").read_bytes() == b"B" and (target / "pkg" / "hard").read_bytes() == b"A"
    z = _zip(tmp_path / "good.zip", [{"name": "d/x.txt", "data": b"X"},
                                     {"name": "d/l", "type": "symlink", "target": "x.txt"}])
    D.extract(z, target)
    assert (target / "d" / "l").read_bytes() == b"X"
    assert not [p for p in target.iterdir() if p.name.startswith(".medlab-extract")]


MALICIOUS = {
    "traversal": [{"name": "ok.txt"}, {"name": "../evil.txt", "data": b"pwned"}],
    "nested traversal": [{"name": "a/../../evil.txt", "data": b"pwned"}],
    "absolute": [{"name": "/tmp/medlab_evil_abs.txt", "data": b"pwned"}],
    "symlink out": [{"name": "escape", "type": "symlink", "target": "../"}, {"name": "escape/evil.txt"}],
    "absolute symlink": [{"name": "etc", "type": "symlink", "target": "/etc"}],
    "hardlink out": [{"name": "h", "type": "hardlink", "target": "../outside.txt"}],
    "fifo": [{"name": "pipe", "type": "fifo"}],
}


@pytest.mark.parametrize("case", MALICIOUS)
def test_malicious_tar_is_refused_and_writes_nothing(tmp_path, case):
    box = tmp_path / "box"
    target = box / "target"
    target.mkdir(parents=True)
    (box / "outside.txt").write_text("secret")
    arc = _tar(tmp_path / "evil.tar.gz", MALICIOUS[case])
    before = _listing(box)
    with pytest.raises(D.UnsafeArchiveError):
        D.extract(arc, target)
    assert _listing(box) == before  # nothing outside, and nothing half-written inside
    assert not Path("/tmp/medlab_evil_abs.txt").exists()


@pytest.mark.parametrize("members", [
    [{"name": "../evil.txt"}],
    [{"name": "/abs/evil.txt"}],
    [{"name": "C:/evil.txt"}],
    [{"name": "..\\evil.txt"}],
    [{"name": "l", "type": "symlink", "target": "../../etc/passwd"}],
    [{"name": "l", "type": "symlink", "target": "/etc/passwd"}],
])
def test_malicious_zip_is_refused(tmp_path, members):
    target = tmp_path / "box" / "target"
    target.mkdir(parents=True)
    before = _listing(tmp_path / "box")
    with pytest.raises(D.UnsafeArchiveError):
        D.extract(_zip(tmp_path / "evil.zip", members), target)
    assert _listing(tmp_path / "box") == before


def test_link_chain_created_by_the_archive_cannot_escape(tmp_path):
    # "up" -> "." is harmless alone; "up/../x" would be refused lexically, so try writing through a
    # link that points to a folder which is itself a link leading outside once resolved
    target = tmp_path / "box" / "target"
    target.mkdir(parents=True)
    arc = _tar(tmp_path / "chain.tar.gz", [
        {"name": "a", "type": "symlink", "target": "."},
        {"name": "b", "type": "symlink", "target": "a/.."},  # lexically "." but resolves to target/..
        {"name": "b/evil.txt", "data": b"pwned"}])
    with pytest.raises(D.UnsafeArchiveError):
        D.extract(arc, target)
    assert not (tmp_path / "box" / "evil.txt").exists() and _listing(target) == set()


def test_not_an_archive(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    with pytest.raises(D.UnsafeArchiveError, match="neither"):
        D.extract(f, tmp_path / "t")


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_list_fetch_verify(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDLAB_OFFLINE", "1")
    assert data_cli(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("phantom", "medmnist:<flag>", "covid-radiography", "covid-qu-ex", "medseg-covid-ct",
                 "mosmeddata", "pocus", "folder:<path>", "mni152"):
        assert name in out
    assert str(tmp_path) in out and "missing" in out
    assert data_cli(["list", "-v"]) == 0
    assert "licence" in capsys.readouterr().out
    # fetch: offline gives exit code 1 and the manual route
    assert data_cli(["fetch", "medmnist:pneumoniamnist", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "zenodo.org" in err and str(tmp_path / "medmnist" / "pneumoniamnist.npz") in err
    assert data_cli(["fetch", "covid-radiography"]) == 1
    assert "kaggle datasets download" in capsys.readouterr().err
    # verify: an existing file with the wrong content fails its MD5
    folder = tmp_path / "medmnist"
    folder.mkdir()
    np.savez(folder / "pneumoniamnist.npz", train_images=np.zeros((1, 28, 28), np.uint8))
    assert data_cli(["verify", "medmnist:pneumoniamnist"]) == 1
    assert "MD5 mismatch" in capsys.readouterr().out
    assert data_cli(["verify", "medseg-covid-ct"]) == 1
    with pytest.raises(SystemExit):
        data_cli(["frobnicate"])
