"""The explorers work with Colab's ipywidgets 7.7.1 as well as with the ipywidgets 8 installed here.

Colab pins ipywidgets 7.7.1 (with ipykernel 6.17.1, ipython 7.34.0, traitlets 5.7.1 and
widgetsnbextension 3.6.10; tests/colab-constraints.txt), and the set-up cell must not upgrade
them, so ``medlab.widgets`` has to work with both major versions. The 7.7.1 stack is installed
once (``pip install --target``, about 20 MB, cached in this virtual environment) and put first
on ``sys.path`` of a subprocess that builds both explorers as live widgets, moves their
sliders and checks that they redraw; the same script runs with this environment's ipywidgets.
A fake ``google.colab.output`` checks that the explorers turn on Colab's custom widget manager.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from registry_support import index_url, pip_environment, require_registry

REPO = Path(__file__).resolve().parent.parent
COLAB_STACK = ("ipywidgets==7.7.1", "widgetsnbextension==3.6.10", "ipykernel==6.17.1", "ipython==7.34.0",
               "traitlets==5.7.1", "ipython_genutils==0.2.0", "backcall", "pickleshare", "decorator")
# (the rest of what IPython 7.34 and ipykernel 6.17 import, jedi, pexpect, prompt_toolkit, pygments,
#  jupyter_client, tornado, pyzmq, ..., comes from this environment)
CACHE = Path(sys.prefix) / "medlab-test-ipywidgets-7.7.1"

pytestmark = pytest.mark.timeout(600)

SCRIPT = textwrap.dedent('''
    import sys, types
    import numpy as np
    import IPython, IPython.display, ipywidgets

    expected = sys.argv[1]
    assert ipywidgets.__version__ == expected or expected == "installed", ipywidgets.__version__
    print("ipywidgets", ipywidgets.__version__, "from", ipywidgets.__file__)

    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("enabled"))
    sys.modules["google"] = types.ModuleType("google")
    sys.modules["google"].colab = colab
    sys.modules["google.colab"] = colab
    sys.modules["google.colab.output"] = colab.output

    class Shell:
        kernel = object()
    IPython.get_ipython = lambda: Shell()
    shown = []
    IPython.display.display = lambda obj, *a, **k: shown.append(obj)

    from medlab import metrics, widgets
    assert widgets.is_live_frontend()

    volume = np.random.default_rng(0).normal(40, 10, (12, 16, 16))
    masks = np.zeros(volume.shape, int)
    masks[3:8, 4:10, 4:10] = 1
    box = widgets.slice_viewer(volume, masks=masks, window=(40, 60))
    assert isinstance(box, ipywidgets.VBox) and shown == [box], shown
    slider = box.children[0].children[0]
    center, width = box.children[1].children
    image = box.children[-1]
    first = image.value
    assert first[:4] == b"\\x89PNG"
    slider.value = 2
    assert image.value != first
    before = image.value
    width.value = 10
    assert image.value != before

    y = np.random.default_rng(1).integers(0, 2, 50)
    s = np.random.default_rng(2).random(50) + 0.3 * y
    box = widgets.operating_point_explorer(y, s)
    threshold, rates, image = box.children
    first = image.value
    threshold.value = 0.9
    op = metrics.operating_point(y, s, threshold.value)
    assert f"<b>sensitivity</b> {op['sensitivity']:.3f}" in rates.value, rates.value
    assert image.value != first
    assert calls == ["enabled"], calls  # Colab's widget manager turned on, once
    print("OK")
''')


def _colab_stack() -> Path:
    """Colab's widget and kernel packages in a folder of their own (installed once, then reused)."""
    stamp = CACHE / ".complete"
    if stamp.exists() and stamp.read_text() == "\n".join(COLAB_STACK) + "\n":
        return CACHE
    require_registry(index_url() + "ipywidgets/", "the Python package index")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(CACHE),
                           "--upgrade", *COLAB_STACK], capture_output=True, text=True, env=pip_environment(),
                          timeout=300)
    assert done.returncode == 0, f"installing Colab's widget stack failed:\n{done.stdout}\n{done.stderr}"
    (CACHE / ".complete").write_text("\n".join(COLAB_STACK) + "\n")
    return CACHE


def _run(first_on_path: Path | None, expected: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MEDLAB_HEADLESS", "PYTHONPATH")}
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (first_on_path, REPO) if p is not None)
    return subprocess.run([sys.executable, "-c", SCRIPT, expected], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(REPO))


@pytest.mark.parametrize("version", ["7.7.1", "installed"])
def test_explorers_with_ipywidgets(version):
    target = _colab_stack() if version == "7.7.1" else None
    done = _run(target, version)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), (
        f"the explorers fail with ipywidgets {version}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
