"""A figure test helper shared by the test modules: render a matplotlib Figure to PNG."""
from __future__ import annotations

import io

from matplotlib.figure import Figure


def rendered(fig):
    """Render to PNG (catches errors that only appear at draw time) and return the figure."""
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    assert buffer.getvalue()[:4] == b"\x89PNG"
    return fig
