"""Real medical images that installed packages ship, found without any network access.

The lessons use these so that they run offline and still show real data:

=================  =====================================================  ====================
name               what it is                                             shipped by
=================  =====================================================  ====================
``ct_small``       a 128x128 CT slice, 16-bit, with rescale to HU         pydicom
``mr_small``       a 64x64 MR slice, 16-bit, arbitrary units              pydicom
``us_rgb``         a small colour ultrasound frame (RGB DICOM)            pydicom
``nifti_anat``     a small 3-D anatomical MRI volume (2 mm voxels)        nibabel
``mni152_t1``      the MNI152 T1 brain template (1 mm voxels)             nilearn
``mni152_gm``      its grey-matter probability map                        nilearn
``mni152_wm``      its white-matter probability map                       nilearn
``retina``         a colour fundus photograph (JPEG)                      scikit-image
``histology_ihc``  an immunohistochemistry tile (RGB PNG)                 scikit-image
``photo``          an ordinary colour photograph (RGB PNG)                scikit-image
=================  =====================================================  ====================

``pydicom.data.get_testdata_file`` would try to download files that are not
bundled; :func:`example_path` only ever looks on disk.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import DataNotFoundError

__all__ = ["EXAMPLES", "example_path", "available_examples"]

# name: (package, path inside the package, description)
EXAMPLES = {
    "ct_small": ("pydicom", "data/test_files/CT_small.dcm", "CT slice, 16-bit, rescale to Hounsfield units"),
    "mr_small": ("pydicom", "data/test_files/MR_small.dcm", "MR slice, 16-bit, arbitrary units"),
    "us_rgb": ("pydicom", "data/test_files/ExplVR_BigEnd.dcm", "colour ultrasound frame (RGB DICOM, big-endian)"),
    "nifti_anat": ("nibabel", "tests/data/anatomical.nii", "small anatomical MRI volume, 2 mm voxels"),
    "mni152_t1": ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "MNI152 T1 template, 1 mm"),
    "mni152_gm": ("nilearn", "datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", "MNI152 grey-matter map"),
    "mni152_wm": ("nilearn", "datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", "MNI152 white-matter map"),
    "retina": ("skimage", "data/retina.jpg", "colour fundus photograph of a human retina (JPEG)"),
    "histology_ihc": ("skimage", "data/ihc.png", "immunohistochemistry tile, RGB"),
    "photo": ("skimage", "data/astronaut.png", "ordinary colour photograph"),
}


def example_path(name: str) -> Path:
    """The path of a bundled example image.

    Raises:
        DataNotFoundError: the package that ships it is not installed, or the
            file is missing from it; the message says what to install.
    """
    if name not in EXAMPLES:
        raise DataNotFoundError(name, f"unknown example; the examples are: {', '.join(EXAMPLES)}")
    package, inside, _ = EXAMPLES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(name, f"it ships with the Python package {package!r}: pip install {package}")
    path = Path(list(spec.submodule_search_locations)[0]) / inside
    if not path.is_file():
        raise DataNotFoundError(name, f"{path} is missing from the installed {package!r}; reinstall it")
    return path


def available_examples() -> dict[str, Path | None]:
    """Every example name with its path, or None where it is not installed."""
    found = {}
    for name in EXAMPLES:
        try:
            found[name] = example_path(name)
        except DataNotFoundError:
            found[name] = None
    return found
