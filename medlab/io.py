"""Read medical images into one shape: :func:`read_image` and CT windowing.

``read_image(path)`` reads DICOM (pydicom), NIfTI-1/-2 (nibabel), PNG and JPEG
(Pillow) and NumPy ``.npy``/``.npz`` files and returns an :class:`Image`::

    img = medlab.io.read_image("CT_small.dcm")
    img.array        # NumPy array, axes as below
    img.spacing      # (0.66, 0.66): mm per spatial axis, or None when unknown
    img.modality     # "CT", "MR", "US", ... or "unknown"
    img.meta         # header values that carry no patient identity
    shown = medlab.io.window(img.array, "lung")   # float32 in [0, 1]

The format is chosen from the file's first bytes (the ``DICM`` marker at byte
128, the PNG signature, the JPEG start-of-image marker, a NIfTI ``sizeof_hdr``
of 348 or 540, also inside gzip, the NumPy and zip signatures); the extension
is only a hint, used for DICOM files written without the 128-byte preamble.

Axis conventions
----------------
* Spatial axes come last: ``(rows, columns)`` for a 2D image and
  ``(slices, rows, columns)`` for a volume.
* Any other axis (time, cine frames) comes first: ``(frames, rows, columns)``,
  ``(time, slices, rows, columns)``.
* Colour is a trailing axis of 3 (RGB): ``(rows, columns, 3)``,
  ``(frames, rows, columns, 3)``.
* ``spacing`` has one value in mm per spatial axis, in the array's order
  (``(row spacing, column spacing)`` or ``(slice, row, column)``), or is None.
  Frames, time and colour have no entry.

DICOM
    Rescale slope and intercept are applied (float32; for CT the values are
    Hounsfield units). MONOCHROME1 images are inverted within their stored bit
    range so that, as in MONOCHROME2, bright means dense. YBR colour is
    converted to RGB and palette colour expanded to RGB. A multi-frame file
    gives ``(frames, rows, columns)``; its frames count as slices, and
    ``spacing`` has three values, only when SpacingBetweenSlices (else
    SliceThickness) is given, otherwise the frames are a non-spatial first axis
    and ``spacing`` has two values (from PixelSpacing).
NIfTI
    nibabel stores voxels as ``(x, y, z[, t])`` with an affine to world space.
    The image is first brought to the closest canonical orientation and then
    laid out as ``(S, P, L)``: axis 0 runs inferior -> superior (slices),
    axis 1 anterior -> posterior (rows) and axis 2 patient right -> patient
    left (columns). This is the layout of an axial DICOM series, so
    ``plt.imshow(array[k])`` shows an axial slice in the radiological
    convention (anterior at the top, patient's right on the viewer's left).
    For an RAS+ file (the common case) this is exactly
    ``data.transpose(2, 1, 0)[:, ::-1, ::-1]``. ``spacing`` is the header zooms
    permuted the same way, so zooms ``(0.5, 0.8, 3.0)`` give
    ``(3.0, 0.8, 0.5)``. 4D and higher: the extra axes (time) come first.
    ``meta["affine"]`` maps ``(slice, row, column)`` indices of the returned
    array to RAS+ millimetres.
PNG, JPEG
    Grey images are 2D, colour images ``(H, W, 3)`` (alpha dropped); 16-bit
    PNG stays uint16. ``spacing`` is None.
NPY, NPZ
    ``.npz``: the array under key ``image``, or its only array; optional keys
    ``spacing`` and ``modality``.

Errors: a missing, empty, truncated, corrupt or unsupported file raises
:class:`~medlab.errors.ImageReadError` naming the path and the problem.
Nonsense spacing (zero, negative, NaN, the wrong number of values) gives
``spacing=None`` and a warning naming the file; a DICOM without PixelSpacing
(usual for ultrasound) gives ``spacing=None`` quietly.
"""
from __future__ import annotations

import gzip
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageReadError

__all__ = ["Image", "ImageReadError", "WINDOWS", "SUPPORTED_FORMATS", "read_image", "window"]

#: Named CT windows as ``name: (center, width)`` in Hounsfield units.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft_tissue": (50.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

SUPPORTED_FORMATS = "DICOM, NIfTI (.nii, .nii.gz), PNG, JPEG, NumPy (.npy, .npz)"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
# Formats recognised only to name them in the error message.
_KNOWN_UNSUPPORTED = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF"}


@dataclass(repr=False)
class Image:
    """An image as read from a file.

    Attributes:
        array: pixel or voxel values; axes as in the module docstring.
        spacing: mm per spatial axis in the array's order, or None if unknown.
        modality: DICOM modality ("CT", "MR", "US", ...) or "unknown".
        meta: header values without patient identity (format, original_dtype,
            file_size_bytes, and format-specific keys).
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    modality: str = "unknown"
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Image(shape={self.array.shape}, dtype={self.array.dtype}, "
                f"spacing={self.spacing}, modality={self.modality!r}, "
                f"format={self.meta.get('format')!r})")


def read_image(path) -> Image:
    """Read a DICOM, NIfTI, PNG, JPEG, ``.npy`` or ``.npz`` file.

    Args:
        path: the file (str or Path). The format is taken from its content;
            the extension is only a hint.

    Returns:
        An :class:`Image`. Axes, spacing and per-format processing (HU
        rescale, MONOCHROME1 inversion, colour conversion, NIfTI
        reorientation) are described in the module docstring.

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt or in
            an unsupported format.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "this is a directory; pass a single image file")
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")

    fmt = _sniff_format(path)
    reader = {"DICOM": _read_dicom, "NIfTI": _read_nifti, "PNG": _read_pillow, "JPEG": _read_pillow,
              "NPY": _read_npy, "NPZ": _read_npz}[fmt]
    try:
        image = reader(path)
    except ImageReadError:
        raise
    except Exception as err:  # pydicom, nibabel and Pillow raise many exception types
        raise ImageReadError(
            path, f"not a readable {fmt} file; it may be truncated or corrupt ({type(err).__name__}: {err})"
        ) from err
    if not image.array.dtype.isnative:  # e.g. big-endian NIfTI; torch needs native byte order
        image.array = image.array.astype(image.array.dtype.newbyteorder("="))
    image.meta.setdefault("format", fmt)
    image.meta["file_size_bytes"] = size
    return image


def window(array, center, width=None) -> np.ndarray:
    """Map values (e.g. Hounsfield units) to [0, 1] for display.

    Values at or below ``center - width/2`` become 0, at or above
    ``center + width/2`` become 1, linearly in between.

    Args:
        array: the values, any shape.
        center: window centre (level), or the name of a preset in
            :data:`WINDOWS` ("lung", "mediastinum", "bone", "brain", ...).
        width: window width (> 0); leave out when ``center`` is a preset name.

    Returns:
        A float32 array of the same shape with values in [0, 1].

    Raises:
        ValueError: unknown preset name, or a width that is not positive.
    """
    if isinstance(center, str):
        if center not in WINDOWS:
            raise ValueError(f"unknown window preset {center!r}; the presets are: {', '.join(WINDOWS)}")
        if width is not None:
            raise ValueError(f"give either a preset name or center and width, not both (got {center!r}, {width})")
        center, width = WINDOWS[center]
    if width is None:
        raise ValueError("window(array, center, width) needs a width (or a preset name as center)")
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    out = (np.asarray(array, dtype=np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


# --- format detection --------------------------------------------------------------------------

def _sniff_format(path: Path) -> str:
    """Name the format from the file's first bytes, with the extension as a hint."""
    with open(path, "rb") as fh:
        head = fh.read(544)
    if head[128:132] == b"DICM":
        return "DICOM"
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith(_JPEG_SOI):
        return "JPEG"
    if head.startswith(_NPY_MAGIC):
        return "NPY"
    if head.startswith(_ZIP_MAGIC):
        return "NPZ"
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(4)
        except (OSError, EOFError, zlib.error) as err:
            raise ImageReadError(path, f"gzip file is truncated or corrupt ({err})") from err
        if _nifti_sizeof_hdr(inner):
            return "NIfTI"
        raise ImageReadError(path, f"gzip file that does not hold a NIfTI image; supported formats: "
                                   f"{SUPPORTED_FORMATS}")
    if _nifti_sizeof_hdr(head[:4]):
        return "NIfTI"
    if path.name.lower().endswith(_DICOM_SUFFIXES):
        return "DICOM"  # maybe a DICOM file without preamble; _read_dicom checks
    kind = next((name for magic, name in _KNOWN_UNSUPPORTED.items() if head.startswith(magic)), None)
    what = f"{kind} files are not supported" if kind else "unrecognised file content"
    raise ImageReadError(path, f"{what}; supported formats: {SUPPORTED_FORMATS}")


def _nifti_sizeof_hdr(first4: bytes) -> int:
    """348 (NIfTI-1/Analyze) or 540 (NIfTI-2) if ``first4`` is such a header start, else 0."""
    if len(first4) < 4:
        return 0
    for order in ("<", ">"):
        value = int(np.frombuffer(first4, dtype=f"{order}i4")[0])
        if value in (348, 540):
            return value
    return 0


# --- spacing -----------------------------------------------------------------------------------

def _valid_spacing(values, path: Path, source: str) -> tuple[float, ...] | None:
    """Return ``values`` as floats if all are finite and positive, else warn and return None."""
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        spacing = ()
    if spacing and all(math.isfinite(v) and v > 0 for v in spacing):
        return spacing
    warnings.warn(f"{path}: {source} is {values!r}, not a positive size in mm; spacing set to None",
                  UserWarning, stacklevel=4)
    return None


# --- DICOM -------------------------------------------------------------------------------------

_DICOM_META_KEYS = (
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
    "RescaleType", "WindowCenter", "WindowWidth", "PixelSpacing", "ImagerPixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "BodyPartExamined", "Manufacturer",
)


def _plain(value):
    """pydicom values (DS, IS, MultiValue, UID) as plain JSON-friendly Python values."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, float):  # DSfloat
        return float(value)
    if isinstance(value, int):  # IS
        return int(value)
    return str(value)


def _dicom_attr(ds, keyword):
    """A top-level attribute, else one from the shared Pixel Measures of an enhanced multi-frame file."""
    value = ds.get(keyword)
    if value is None and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:
            value = shared.PixelMeasuresSequence[0].get(keyword)
    return value


def _read_dicom(path: Path) -> Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array
    except ImportError as err:  # pydicom 2.x
        raise ImageReadError(path, f"reading DICOM needs pydicom >= 3.0 (found {pydicom.__version__})") from err

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        # No 'DICM' marker; the extension says DICOM, so try a file written without the preamble.
        ds = pydicom.dcmread(path, force=True)
        if "Rows" not in ds:
            raise ImageReadError(path, "not a DICOM file (no 'DICM' marker and no image header); "
                                       f"supported formats: {SUPPORTED_FORMATS}") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(path, f"DICOM file without pixel data (SOP class {ds.get('SOPClassUID', 'unknown')}, "
                                   "e.g. a report, structure set or DICOMDIR)")

    try:
        arr = pixel_array(ds, raw=True)  # stored values; colour handled below
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ImageReadError(path, f"cannot decode the pixel data (transfer syntax {name}): {err}") from err

    meta = {k: _plain(ds.get(k)) for k in _DICOM_META_KEYS if ds.get(k) is not None}
    meta["format"] = "DICOM"
    meta["original_dtype"] = str(arr.dtype)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        meta["TransferSyntax"] = str(getattr(syntax, "name", syntax))

    modality = str(ds.get("Modality") or "unknown")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric.startswith("YBR_FULL"):
        arr = convert_color_space(arr, photometric, "RGB")
    elif photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif photometric == "MONOCHROME1" and arr.dtype.kind in "iu":
        bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
        if arr.dtype.kind == "u":
            arr = (2 ** bits - 1) - arr
        else:
            arr = -1 - arr  # reverses [-2**(bits-1), 2**(bits-1) - 1] onto itself
        arr = arr.astype(meta["original_dtype"], copy=False)
        meta["inverted"] = True

    slope = float(ds.RescaleSlope) if ds.get("RescaleSlope") is not None else 1.0
    intercept = float(ds.RescaleIntercept) if ds.get("RescaleIntercept") is not None else 0.0
    if not (math.isfinite(slope) and slope != 0 and math.isfinite(intercept)):
        warnings.warn(f"{path}: nonsense RescaleSlope/Intercept ({slope}, {intercept}); values left as stored",
                      UserWarning, stacklevel=3)
    elif modality == "CT" or (slope, intercept) != (1.0, 0.0):
        arr = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)

    spacing = None
    pixel_spacing = _dicom_attr(ds, "PixelSpacing")
    if pixel_spacing is None:
        pass  # usual for ultrasound and secondary captures: unknown, nothing to warn about
    elif not hasattr(pixel_spacing, "__len__") or len(pixel_spacing) != 2:
        warnings.warn(f"{path}: no usable PixelSpacing in the DICOM header ({pixel_spacing!r}); spacing set to None",
                      UserWarning, stacklevel=3)
    else:
        spacing = _valid_spacing(pixel_spacing, path, "PixelSpacing")
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if spacing is not None and n_frames > 1:
        between = _dicom_attr(ds, "SpacingBetweenSlices")
        thickness = _dicom_attr(ds, "SliceThickness")
        step, source = (between, "SpacingBetweenSlices") if between is not None else (thickness, "SliceThickness")
        if step is not None:
            slice_spacing = _valid_spacing([step], path, source)
            spacing = None if slice_spacing is None else slice_spacing + spacing
    if n_frames > 1:
        meta["frame_axis"] = "slices" if spacing is not None and len(spacing) == 3 else "frames"
    return Image(array=np.ascontiguousarray(arr), spacing=spacing, modality=modality, meta=meta)


# --- NIfTI -------------------------------------------------------------------------------------

_TARGET_AXES = ("S", "P", "L")  # (slices, rows, columns)


def _read_nifti(path: Path) -> Image:
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz")):
        img = nib.load(path)
    else:  # NIfTI content under another name: nibabel chooses by extension, so load from bytes
        raw = path.read_bytes()
        if raw.startswith(_GZIP_MAGIC):
            raw = gzip.decompress(raw)
        img = (nib.Nifti2Image if _nifti_sizeof_hdr(raw[:4]) == 540 else nib.Nifti1Image).from_bytes(raw)

    header = img.header
    meta = {
        "format": {"Nifti1Image": "NIfTI-1", "Nifti2Image": "NIfTI-2"}.get(type(img).__name__, "Analyze"),
        "original_dtype": str(np.dtype(header.get_data_dtype())),
        "original_shape": tuple(int(n) for n in img.shape),
        "original_axcodes": "".join(str(c) for c in nib.aff2axcodes(img.affine)),
        "zooms": tuple(float(z) for z in header.get_zooms()),
    }
    if hasattr(header, "get_xyzt_units"):
        meta["xyzt_units"] = tuple(header.get_xyzt_units())
    data = np.asarray(img.dataobj)  # applies scl_slope/scl_inter when the header sets them
    if data.ndim < 3:
        data = data.reshape(data.shape + (1,) * (3 - data.ndim))
    zooms = (tuple(header.get_zooms()) + (1.0,) * 3)[:3]

    ornt = io_orientation(img.affine)
    if np.isnan(ornt).any():
        warnings.warn(f"{path}: the affine is degenerate, so the orientation is unknown; "
                      "axes transposed to (z, y, x) without flips", UserWarning, stacklevel=3)
        ornt = np.array([[2, 1], [1, 1], [0, 1]], dtype=float)
        affine = None
    else:
        ornt = ornt_transform(ornt, axcodes2ornt(_TARGET_AXES))
        affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape[:3])
    data = nib.orientations.apply_orientation(data, ornt)
    spatial = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _flip) in enumerate(ornt):
        spatial[int(target_axis)] = zooms[source_axis]
    spacing = _valid_spacing(spatial, path, "the NIfTI voxel size (pixdim)")

    # Extra axes (time, ...) move in front of (slices, rows, columns).
    extra = list(range(3, data.ndim))
    data = np.ascontiguousarray(data.transpose(extra + [0, 1, 2]))
    if affine is not None:
        meta["affine"] = affine.tolist()
    return Image(array=data, spacing=spacing, modality="unknown", meta=meta)


# --- PNG / JPEG --------------------------------------------------------------------------------

def _read_pillow(path: Path) -> Image:
    from PIL import Image as PILImage

    with PILImage.open(path) as pil:
        pil.load()  # decode now, so a truncated file fails here
        mode = pil.mode
        meta = {"format": pil.format, "mode": mode}
        if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            arr = np.asarray(pil).astype(np.uint16)
        elif mode == "I":
            arr = np.asarray(pil)
            if pil.format == "PNG" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
                arr = arr.astype(np.uint16)  # older Pillow opens 16-bit PNG as 32-bit "I"
        elif mode in ("L", "F"):
            arr = np.asarray(pil)
        elif mode == "LA":
            arr = np.asarray(pil)[..., 0]
        elif mode == "1":
            arr = np.asarray(pil.convert("L"))
        elif mode == "RGB":
            arr = np.asarray(pil)
        elif mode == "RGBA":
            arr = np.asarray(pil)[..., :3]
        else:  # P (palette), CMYK, YCbCr, ...
            arr = np.asarray(pil.convert("RGB"))
    meta["original_dtype"] = str(arr.dtype)
    return Image(array=np.ascontiguousarray(arr), spacing=None, modality="unknown", meta=meta)


# --- NumPy -------------------------------------------------------------------------------------

def _read_npy(path: Path) -> Image:
    arr = np.load(path, allow_pickle=False)
    return Image(array=arr, spacing=None, modality="unknown",
                 meta={"format": "NPY", "original_dtype": str(arr.dtype)})


def _read_npz(path: Path) -> Image:
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.keys())
        candidates = [k for k in keys if k not in ("spacing", "modality")]
        if "image" in keys:
            key = "image"
        elif len(candidates) == 1:
            key = candidates[0]
        else:
            raise ImageReadError(path, f"the .npz holds arrays {keys}; name the image array 'image'")
        arr = npz[key]
        spacing = None
        if "spacing" in keys:
            values = np.atleast_1d(npz["spacing"])
            spacing = _valid_spacing(values.tolist(), path, "the 'spacing' array")
            if spacing is not None and len(spacing) > arr.ndim:
                warnings.warn(f"{path}: {len(spacing)} spacing values for a {arr.ndim}D array; spacing set to None",
                              UserWarning, stacklevel=3)
                spacing = None
        modality = str(npz["modality"]) if "modality" in keys else "unknown"
    return Image(array=arr, spacing=spacing, modality=modality,
                 meta={"format": "NPZ", "key": key, "original_dtype": str(arr.dtype)})
