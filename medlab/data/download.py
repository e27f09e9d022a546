"""Where data sets live, and safe ways to get them there.

* :func:`data_dir`: ``$MEDLAB_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/medlab``
  (``~/.cache/medlab`` by default). Each source keeps its files in its own
  sub-folder (``data_dir() / "medmnist"``, ...).
* :func:`download`: streams a URL to a temporary file beside the destination,
  checks the size and the checksum, and only then renames it into place
  (``os.replace``, atomic on one file system): an interrupted or corrupt
  download never looks complete. Offline, it fails within seconds with a
  message saying what to download by hand and where to put it.
* :func:`extract`: unpacks ``.zip`` and ``.tar(.gz|.bz2|.xz)`` archives, refusing
  absolute paths, ``..`` components, device files, and links that lead out of
  the target; members are checked before anything is written, and the archive
  is unpacked in a staging folder inside the target that is moved into place
  only when everything succeeded.

Set ``MEDLAB_OFFLINE=1`` to make every download fail at once (as in CI).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import MedlabError

__all__ = [
    "data_dir", "source_dir", "file_checksum", "verify_checksum", "download", "extract",
    "DownloadError", "ChecksumError", "UnsafeArchiveError", "OFFLINE_ENV", "DATA_DIR_ENV", "use_google_drive",
    "in_colab",
]

DATA_DIR_ENV = "MEDLAB_DATA_DIR"
OFFLINE_ENV = "MEDLAB_OFFLINE"
_CHUNK = 1 << 20


class DownloadError(MedlabError, OSError):
    """A download failed (offline, server error, interrupted); the message says what to do by hand."""


class ChecksumError(MedlabError, ValueError):
    """A file's checksum is not the expected one (corrupt or wrong file)."""


class UnsafeArchiveError(MedlabError, ValueError):
    """An archive holds a member that would be written outside the target folder."""


def data_dir(create: bool = False) -> Path:
    """The root folder of medlab's data sets.

    ``$MEDLAB_DATA_DIR`` when set, else ``$XDG_CACHE_HOME/medlab``, else
    ``~/.cache/medlab``. With ``create=True`` the folder is made if missing.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(cache).expanduser() / "medlab"
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def use_google_drive(folder: str = "medlab-data", mount_point: str = "/content/drive") -> Path:
    """In Colab, keep the data sets (and the weights medlab pretrains) in Google Drive.

    Mounts Google Drive (Colab asks for permission the first time), makes
    ``MyDrive/<folder>`` the data folder (sets ``MEDLAB_DATA_DIR`` for this session) and
    returns it. A Colab session's own disk is wiped when the session ends; the Drive folder
    stays, so the next session finds the data without downloading again. Call it before
    the data are loaded (in a cell right after a lesson's set-up cell).

    Raises:
        DownloadError: not running in Colab (elsewhere, set ``MEDLAB_DATA_DIR`` to any folder).
    """
    try:
        from google.colab import drive
    except ImportError:
        raise DownloadError("use_google_drive() works in Google Colab only; elsewhere set the environment "
                            f"variable {DATA_DIR_ENV} to the folder that holds (or should hold) the data") from None
    drive.mount(mount_point)
    target = Path(mount_point) / "MyDrive" / folder
    target.mkdir(parents=True, exist_ok=True)
    os.environ[DATA_DIR_ENV] = str(target)
    return target


def in_colab() -> bool:
    """Whether this Python runs in Google Colab."""
    import sys

    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def source_dir(name: str, create: bool = False) -> Path:
    """The folder of one data source under :func:`data_dir` (``medmnist``, ``covid-radiography``, ...)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.split(":", 1)[0])
    path = data_dir() / safe
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# checksums


def _parse_checksum(checksum: str) -> tuple[str, str]:
    if ":" in checksum:
        algo, digest = checksum.split(":", 1)
    else:  # bare hex: guess from the length
        digest = checksum
        algo = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(checksum), "")
    algo = algo.lower()
    if algo not in ("md5", "sha1", "sha256", "sha512"):
        raise ValueError(f"checksum {checksum!r}: use 'sha256:<hex>' or 'md5:<hex>'")
    return algo, digest.lower()


def file_checksum(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path, checksum: str) -> bool:
    """True when ``path`` has the checksum ``"algo:hex"`` (or a bare md5/sha1/sha256 hex)."""
    algo, digest = _parse_checksum(checksum)
    return Path(path).is_file() and file_checksum(path, algo) == digest


# ---------------------------------------------------------------------------------------------
# downloads


def _manual(url: str, dest: Path) -> str:
    return f"Download {url} by hand (in a browser or with curl) and save it as {dest}."


def _check_reachable(url: str, timeout: float) -> None:
    """Fail fast when the host cannot even be connected to (offline machines, firewalls)."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        raise DownloadError(f"{OFFLINE_ENV} is set, so nothing is downloaded.")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return
    if parts.scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme in {url!r} (use http, https or file)")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise DownloadError(f"cannot reach {host}:{port} ({exc}); this machine seems to be offline.") from None


def download(url: str, dest, checksum: str | None = None, *, timeout: float = 30.0,
             connect_timeout: float = 5.0, progress: bool = True, overwrite: bool = False) -> Path:
    """Download ``url`` to ``dest`` safely; return ``dest``.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: destination file path (its folder is created).
        checksum: ``"sha256:<hex>"`` or ``"md5:<hex>"``; when given, the file
            is accepted only if it matches (an existing ``dest`` that matches
            is kept without downloading).
        timeout: seconds without data before the transfer is abandoned.
        connect_timeout: seconds allowed to reach the host at all.
        progress: show a tqdm progress bar.
        overwrite: download again even if ``dest`` exists (without a checksum,
            an existing ``dest`` is otherwise trusted).

    Raises:
        DownloadError: offline, HTTP error, or the transfer stopped early
            (fewer bytes than announced). Nothing is left at ``dest``.
        ChecksumError: the downloaded bytes do not match ``checksum``; the
            temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        if checksum is None or verify_checksum(dest, checksum):
            return dest
    algo, digest = _parse_checksum(checksum) if checksum else ("sha256", None)
    how = _manual(url, dest)
    try:
        _check_reachable(url, connect_timeout)
    except DownloadError as exc:
        raise DownloadError(f"{exc} {how}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(algo)
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "medlab (+https://github.com/)"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}. {how}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}. {how}") from None
        with response, os.fdopen(fd, "wb") as out:
            fd = None
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            bar = _progress(expected, dest.name) if progress else None
            try:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, socket.timeout, http.client.HTTPException) as exc:
                        raise DownloadError(f"{url}: transfer interrupted after {received} bytes ({exc}). {how}") from None
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and received != expected:
            raise DownloadError(f"{url}: transfer interrupted: got {received} of {expected} bytes. {how}")
        if digest is not None and h.hexdigest() != digest:
            raise ChecksumError(f"{url}: checksum mismatch ({algo} {h.hexdigest()}, expected {digest}); "
                                "the file is corrupt or has changed upstream. Nothing was saved.")
        os.replace(tmp, dest)
        return dest
    finally:
        if fd is not None:
            os.close(fd)
        if tmp.exists():
            tmp.unlink()


def _progress(total, name):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)


# ---------------------------------------------------------------------------------------------
# archives


def _check_name(name: str) -> PurePosixPath:
    """Refuse absolute paths, drive letters, backslash tricks and ``..`` components."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"archive member with an empty or invalid name: {name!r}")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"archive member with an absolute path: {name!r}")
    parts = PurePosixPath(norm).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member leading out of the target with '..': {name!r}")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")]) if parts else PurePosixPath(".")


def _check_link(name: PurePosixPath, link_target: str, hard: bool) -> None:
    """A link must be relative and, resolved lexically from its folder, stay inside the target."""
    t = link_target.replace("\\", "/")
    if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
        raise UnsafeArchiveError(f"link {str(name)!r} points to an absolute path {link_target!r}")
    base = [] if hard else list(name.parent.parts)
    depth = list(base)
    for part in PurePosixPath(t).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not depth:
                raise UnsafeArchiveError(f"link {str(name)!r} -> {link_target!r} leads out of the target")
            depth.pop()
        else:
            depth.append(part)


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


def extract(archive, target, *, overwrite: bool = True) -> list[Path]:
    """Unpack a zip or tar archive into ``target`` safely; return the top-level paths created.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, device files and FIFOs, and links (symbolic or hard)
    that are absolute or lead out of ``target`` are refused with
    :class:`UnsafeArchiveError`. Members are then written into a staging
    folder inside ``target`` (each write re-checked against links created
    earlier in the same archive) and moved into place at the end; on any
    error the staging folder is removed, so nothing is written outside
    ``target`` and a failed extraction leaves no half-unpacked tree.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    if zipfile.is_zipfile(archive):
        entries = _zip_entries(archive)
    elif tarfile.is_tarfile(archive):
        entries = _tar_entries(archive)
    else:
        raise UnsafeArchiveError(f"{archive} is neither a zip nor a tar archive")
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".medlab-extract-", dir=target))
    try:
        for kind, name, payload, mode in entries():
            dest = staging / name
            if not _inside(dest.parent if kind != "dir" else dest, staging) and str(name) != ".":
                raise UnsafeArchiveError(f"archive member {str(name)!r} would be written outside the target")
            if kind == "dir":
                dest.mkdir(parents=True, exist_ok=True)
                if not _inside(dest, staging):
                    raise UnsafeArchiveError(f"archive member {str(name)!r} would be written outside the target")
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(dest.parent, staging):
                raise UnsafeArchiveError(f"archive member {str(name)!r} would be written outside the target")
            if dest.is_symlink() or dest.exists():
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            if kind == "file":
                with open(dest, "wb") as out:
                    for block in payload():
                        out.write(block)
                if mode:
                    os.chmod(dest, mode & 0o755 | 0o600)
            elif kind == "symlink":
                os.symlink(payload, dest)
                if not _inside(dest, staging):
                    raise UnsafeArchiveError(f"link {str(name)!r} -> {payload!r} leads out of the target")
            elif kind == "hardlink":
                source = staging / payload
                if not _inside(source, staging) or not source.is_file():
                    raise UnsafeArchiveError(f"hard link {str(name)!r} -> {payload!r} does not point to a file inside the archive")
                shutil.copy2(source, dest)
        created = []
        for child in sorted(staging.iterdir()):
            final = target / child.name
            if final.is_symlink() or final.exists():
                if not overwrite:
                    raise FileExistsError(f"{final} exists; pass overwrite=True to replace it")
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                else:
                    final.unlink()
            os.replace(child, final)
            created.append(final)
        return created
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _zip_entries(path: Path):
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    checked = []
    for info in infos:
        name = _check_name(info.filename)
        mode = (info.external_attr >> 16) & 0xFFFF
        if info.is_dir():
            checked.append(("dir", name, info, 0))
        elif stat.S_ISLNK(mode):
            with zipfile.ZipFile(path) as zf:
                link = zf.read(info).decode("utf-8", "replace")
            _check_link(name, link, hard=False)
            checked.append(("symlink", name, link, 0))
        elif mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
            raise UnsafeArchiveError(f"archive member {info.filename!r} is not a regular file")
        else:
            checked.append(("file", name, info, mode & 0o777))

    def entries():
        with zipfile.ZipFile(path) as zf:
            for kind, name, payload, mode in checked:
                if kind == "file":
                    def read(info=payload):
                        with zf.open(info) as src:
                            yield from iter(lambda: src.read(_CHUNK), b"")
                    yield kind, name, read, mode
                else:
                    yield kind, name, payload, mode
    return entries


def _tar_entries(path: Path):
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    checked = []
    for m in members:
        name = _check_name(m.name)
        if m.isdir():
            checked.append(("dir", name, m, 0))
        elif m.issym():
            _check_link(name, m.linkname, hard=False)
            checked.append(("symlink", name, m.linkname, 0))
        elif m.islnk():
            _check_link(name, m.linkname, hard=True)
            checked.append(("hardlink", name, str(_check_name(m.linkname)), 0))
        elif m.isfile():
            checked.append(("file", name, m, m.mode & 0o777))
        else:
            raise UnsafeArchiveError(f"archive member {m.name!r} is a device, FIFO or other special file")

    def entries():
        with tarfile.open(path) as tf:
            for kind, name, payload, mode in checked:
                if kind == "file":
                    def read(member=payload):
                        src = tf.extractfile(member)
                        if src is None:
                            raise UnsafeArchiveError(f"cannot read archive member {member.name!r}")
                        with src:
                            yield from iter(lambda: src.read(_CHUNK), b"")
                    yield kind, name, read, mode
                else:
                    yield kind, name, payload, mode
    return entries
