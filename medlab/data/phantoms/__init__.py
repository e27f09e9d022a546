"""Synthetic medical images with exact ground truth (see ``_common`` for conventions; ``fundus`` is RGB)."""
from __future__ import annotations

from ._common import CT_WINDOWS, DOMAIN_PRESETS, Domain, PhantomBatch, resolve_domain, window
from .brain import ATROPHY_CLASSES, TISSUE_NAMES, AtrophyVolumes, BrainVolumes, brain_atrophy, brain_mri
from .chest_xray import CXR_CLASSES, chest_xray
from .ct import CT_CLASSES, ct_slice, mosmed_band
from .fundus import FUNDUS_CLASSES, FUNDUS_MASK_CLASSES, dr_grade, fundus
from .nodule import NODULE_CLASSES, tirads_level, us_nodule
from .ultrasound import LUS_CLASSES, lung_ultrasound, lung_ultrasound_clips

__all__ = ["PhantomBatch", "Domain", "DOMAIN_PRESETS", "CT_WINDOWS", "window", "resolve_domain",
           "chest_xray", "CXR_CLASSES", "ct_slice", "CT_CLASSES", "mosmed_band",
           "lung_ultrasound", "lung_ultrasound_clips", "LUS_CLASSES",
           "us_nodule", "NODULE_CLASSES", "tirads_level",
           "brain_mri", "brain_atrophy", "BrainVolumes", "AtrophyVolumes", "TISSUE_NAMES", "ATROPHY_CLASSES",
           "fundus", "FUNDUS_CLASSES", "FUNDUS_MASK_CLASSES", "dr_grade"]


def gallery(size: int = 128, seed: int = 0, per_class: int = 1) -> dict[str, PhantomBatch]:
    """One (or ``per_class``) example of every class of every phantom, for a lesson's overview figure.

    Returns:
        ``{"chest_xray": ..., "ct_slice": ..., "lung_ultrasound": ..., "us_nodule (thyroid)": ...,
        "us_nodule (breast)": ...}``, each a :class:`PhantomBatch` ordered by class.
        CT images are in HU: show them with ``batch.display("lung")``.
    """
    import numpy as np

    makers = {
        "chest_xray": lambda n: chest_xray(n, size=size, seed=seed),
        "ct_slice": lambda n: ct_slice(n, size=size, seed=seed),
        "lung_ultrasound": lambda n: lung_ultrasound(n, size=size, seed=seed, probe="mixed"),
        "us_nodule (thyroid)": lambda n: us_nodule(n, size=size, seed=seed, organ="thyroid"),
        "us_nodule (breast)": lambda n: us_nodule(n, size=size, seed=seed, organ="breast"),
    }
    out = {}
    for name, make in makers.items():
        batch = make(8 * per_class)
        k = len(batch.class_names)
        idx = np.concatenate([np.flatnonzero(batch.labels == c)[:per_class] for c in range(k)])
        out[name] = batch.subset(idx)
    return out


__all__.append("gallery")
