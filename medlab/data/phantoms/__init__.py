"""Synthetic medical images with exact ground truth (see ``_common`` for conventions)."""
from __future__ import annotations

from ._common import CT_WINDOWS, DOMAIN_PRESETS, Domain, PhantomBatch, resolve_domain, window
from .chest_xray import CXR_CLASSES, chest_xray

__all__ = ["PhantomBatch", "Domain", "DOMAIN_PRESETS", "CT_WINDOWS", "window", "resolve_domain",
           "chest_xray", "CXR_CLASSES"]
