"""Helpers for ``tests/test_browser.py``: Debian's Chromium driven by Playwright, a throw-away
JupyterLab, a loopback web server for a run folder, and clean-up of every process they start.

Nothing here downloads a browser: Chromium must be Debian's ``/usr/bin/chromium``
(``apt-get install -y --no-install-recommends chromium chromium-driver``; ``.ci/run`` does it).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from requirement_support import fail_or_skip

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL_HINT = ("install Debian's Chromium: apt-get update && apt-get install -y --no-install-recommends "
                "chromium chromium-driver (.ci/run does this); the test never downloads a browser")

# JupyterLab user settings for the throw-away settings folder: no news or update checks
# (no network here, and their pop-up would cover the notebook), and every cell kept in the
# page (no windowing) so that the test sees all outputs.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


# --------------------------------------------------------------------------- prerequisites

REQUIRE_BROWSER_ENV = "MEDLAB_REQUIRE_BROWSER"
SKIPPED_BROWSER_TESTS: list[str] = []  # reasons, for the loud line at the end of the run (conftest.py)


def _missing(reason: str) -> None:
    """Fail when the browser is required (CI), else skip loudly: the reason is repeated at the end of the run."""
    fail_or_skip(reason, REQUIRE_BROWSER_ENV, "the browser tests", "BROWSER TESTS SKIPPED",
                 "They check the lessons in a real browser", SKIPPED_BROWSER_TESTS)


def require_browser() -> str:
    """The path of Debian's Chromium, after checking that it starts.

    Without it (or without Playwright) the test is skipped with a loud reason, unless
    ``MEDLAB_REQUIRE_BROWSER=1`` is set (``.ci/run`` sets it), in which case it fails.
    """
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"{CHROMIUM} is missing: {INSTALL_HINT}")
    try:
        version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        _missing(f"{CHROMIUM} does not start ({err}): {INSTALL_HINT}")
    if version.returncode != 0 or "Chromium" not in version.stdout:
        _missing(f"{CHROMIUM} --version failed ({version.returncode}): {version.stdout}{version.stderr} "
                 f"{INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the Python package playwright is missing: pip install -e '.[dev]' (make test does it)")
    return str(CHROMIUM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def artifact(name: str) -> Path:
    """Where a test artefact (a screenshot) goes: ``test-artifacts/`` at the repository root."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


# --------------------------------------------------------------------------- stopping processes

def stop_processes(processes: list[psutil.Process], grace: float = 10.0) -> None:
    """SIGTERM each process (by its id), wait up to ``grace`` seconds, then SIGKILL what is left.

    psutil refuses to signal a process id that has been reused since it was recorded.
    """
    alive = []
    for proc in processes:
        try:
            proc.terminate()
            alive.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=grace)


def _with_descendants(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


# --------------------------------------------------------------------------- JupyterLab

class Lab:
    """A running JupyterLab: its URL, token, process and log."""

    def __init__(self, url: str, token: str, process: subprocess.Popen, log: Path, root: Path):
        self.url, self.token, self.process, self.log, self.root = url, token, process, log, root

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def lab_environment(home: Path) -> dict:
    """This process's environment with Jupyter's config, data, settings and workspaces in ``home``.

    ``MEDLAB_HEADLESS`` is removed (it turns widgets into static figures) and so is
    ``MPLBACKEND`` (the test suite sets Agg, which would hide the lesson's plots),
    so the kernel sees what a learner's kernel sees.
    """
    env = dict(os.environ)
    for name in ("MEDLAB_HEADLESS", "MPLBACKEND", "JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH"):
        env.pop(name, None)
    folders = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
               "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
               "IPYTHONDIR": "ipython"}
    for variable, folder in folders.items():
        (home / folder).mkdir(parents=True, exist_ok=True)
        env[variable] = str(home / folder)
    for plugin, values in LAB_SETTINGS.items():
        path = home / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def jupyter_lab(root: Path, home: Path, startup_timeout: float = 120.0):
    """Start JupyterLab from this Python environment on a loopback port with a random token.

    ``root`` is the folder it serves (a temporary copy of the lessons); ``home`` holds its
    temporary config, data, runtime, settings and workspaces folders and its log. On exit the
    server and everything it started (kernels run in their own sessions) are stopped by id.
    """
    port, token = free_port(), secrets.token_hex(16)
    log_path = home / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.extension_manager=readonly"]
    env = lab_environment(home)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=str(root), env=env, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, process, log_path, root)
    try:
        _wait_for_server(lab, startup_timeout)
        yield lab
    finally:
        # Kernels are started in sessions of their own: record them before the server goes.
        started = _with_descendants(process.pid)
        stop_processes(started)  # the server first shuts its kernels down itself on SIGTERM
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything left in the server's own session
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def _wait_for_server(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status_url = f"{lab.url}/api/status?token={lab.token}"
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {lab.process.returncode} before serving:\n{lab.log_tail()}",
                        pytrace=False)
        try:
            with urllib.request.urlopen(status_url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on {lab.url} within {timeout:.0f} s:\n{lab.log_tail()}", pytrace=False)


# --------------------------------------------------------------------------- Chromium

@contextmanager
def chromium(user_data_dir: Path, viewport=(1280, 1100)):
    """Debian's Chromium, headless, with a new empty profile in ``user_data_dir``.

    Yields a Playwright ``BrowserContext``. On exit the context is closed and the browser
    process and its helpers (found by their ``--user-data-dir``) are stopped by id.
    """
    from playwright.sync_api import sync_playwright

    executable = require_browser()
    user_data_dir.mkdir(parents=True, exist_ok=True)
    assert not any(user_data_dir.iterdir()), f"{user_data_dir} must be a new, empty folder"
    browser_processes: list[psutil.Process] = []
    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(user_data_dir), executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS),
                viewport={"width": viewport[0], "height": viewport[1]}, timeout=120_000)
        except Exception as err:
            pytest.fail(f"{executable} did not start under Playwright: {err}\n{INSTALL_HINT}", pytrace=False)
        browser_processes = _browser_processes(user_data_dir)
        try:
            assert browser_processes, "could not find the Chromium process that Playwright started"
            context.set_default_timeout(60_000)
            yield context
        finally:
            everything = [p for proc in browser_processes for p in _with_descendants(proc.pid)]
            try:
                context.close()
            except Exception:  # a crashed browser: the processes are stopped below anyway
                pass
            stop_processes(everything, grace=5)


@contextmanager
def new_page(context):
    """A new tab that records uncaught JavaScript errors in ``page.page_errors``."""
    page = context.new_page()
    page.page_errors = []
    page.on("pageerror", lambda err: page.page_errors.append(str(err)))
    try:
        yield page
    finally:
        try:
            page.close()
        except Exception:  # the browser is stopped by the caller either way
            pass


def _browser_processes(user_data_dir: Path) -> list[psutil.Process]:
    """Chromium's main process(es) started by this test: the ones with our profile folder, no --type."""
    marker = f"--user-data-dir={user_data_dir}"
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if marker in cmdline and not any(arg.startswith("--type=") for arg in cmdline):
            found.append(proc)
    return found


# --------------------------------------------------------------------------- JupyterLab in the page

KERNEL_READY = """() => {
  const name = document.querySelector('.jp-NotebookPanel .jp-KernelName');
  const state = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
  return !!name && !!state && !/No Kernel/.test(name.textContent) && state.dataset.status === 'idle';
}"""

PROMPTS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
  .map(e => e.textContent.trim())"""

RUN_FINISHED = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
  const state = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
  return prompts.length > 0 && /\\d/.test(prompts[0]) && !prompts.some(p => p.includes('*'))
         && !!state && state.dataset.status === 'idle';
}"""


def open_notebook(page, lab: Lab, name: str, timeout: float = 120.0) -> None:
    """Open a notebook in JupyterLab and wait until its kernel has started and is idle."""
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout * 1000)
    try:
        page.wait_for_function(KERNEL_READY, timeout=timeout * 1000)
    except Exception as err:
        raise AssertionError(f"the kernel for {name} did not start within {timeout:.0f} s ({err})\n"
                             f"JupyterLab log:\n{lab.log_tail()}") from None


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in JupyterLab's menu bar, then the entry labelled exactly ``item``."""
    page.get_by_role("menuitem", name=top, exact=True).click()
    label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$"))
    page.locator(".lm-Menu .lm-Menu-item").filter(has=label).click()


def run_all_cells(page, lab: Lab, timeout: float = 300.0) -> list[str]:
    """Run > Run All Cells; wait until no cell is queued or running and the kernel is idle. Returns the prompts."""
    menu(page, "Run", "Run All Cells")
    try:
        page.wait_for_function(RUN_FINISHED, timeout=timeout * 1000, polling=500)
    except Exception as err:
        raise AssertionError(f"the notebook did not finish running within {timeout:.0f} s ({err}); prompts: "
                             f"{page.evaluate(PROMPTS)}\nJupyterLab log:\n{lab.log_tail()}") from None
    return page.evaluate(PROMPTS)


def wait_until_idle(page, timeout: float = 60.0) -> None:
    """Wait until the notebook's kernel is idle (a widget's messages keep it busy for a moment)."""
    page.wait_for_function(
        "() => document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'",
        timeout=timeout * 1000, polling=200)


def save_notebook(page, path: Path, timeout: float = 60.0) -> None:
    """File > Save Notebook, then wait until the file on disk holds the new outputs."""
    before = path.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.stat().st_mtime_ns != before:
            time.sleep(0.5)  # let the write finish
            return
        time.sleep(0.25)
    raise AssertionError(f"JupyterLab did not save {path.name} within {timeout:.0f} s")


# --------------------------------------------------------------------------- serving a run folder

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@contextmanager
def serve_folder(folder: Path):
    """Serve ``folder`` on a loopback port (as a CI artefact store or ``python -m http.server`` would)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def screenshot_on_failure(page, name: str):
    """Keep a screenshot of ``page`` as ``test-artifacts/<name>`` when the block raises."""
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=artifact(name))
        except Exception:  # the page may be gone; the original error matters more
            pass
        raise


def copy_lesson(source: Path, folder: Path) -> Path:
    """A copy of a lesson to run in JupyterLab, so the committed notebook is never touched."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copy2(source, target)
    return target
