"""Tests of medlab.io on real files shipped by pydicom, nibabel, nilearn and scikit-image,
and on copies that the tests corrupt."""
from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medlab import errors
from medlab.io import WINDOWS, ImageReadError, read_image, window


def dicom(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not installed"
    return path


def dicom_copy(tmp_path, name: str, out: str = "copy.dcm", **changes):
    """Write a copy of a pydicom test file with some attributes changed (value None deletes)."""
    ds = pydicom.dcmread(dicom(name))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / out
    ds.save_as(path)
    return path


def read_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_image(path)


# --- DICOM -----------------------------------------------------------------------------------

def test_image_read_error_is_reexported():
    assert ImageReadError is errors.ImageReadError
    assert issubclass(ImageReadError, ValueError)


def test_ct_small_hounsfield_units():
    img = read_image(dicom("CT_small.dcm"))
    stored = pydicom.dcmread(dicom("CT_small.dcm")).pixel_array
    assert img.modality == "CT"
    assert img.array.dtype == np.float32 and img.array.shape == (128, 128)
    np.testing.assert_array_equal(img.array, stored.astype(np.float32) - 1024)  # slope 1, intercept -1024
    assert img.spacing == pytest.approx((0.661468, 0.661468))
    assert img.meta["RescaleIntercept"] == -1024.0 and img.meta["BitsAllocated"] == 16
    assert img.meta["original_dtype"] == "int16" and img.meta["file_size_bytes"] == os.path.getsize(
        dicom("CT_small.dcm"))
    # CT_small is a crop around a thoracic vertebra: there is no air outside the body, the darkest
    # tissue is lung. Regions chosen by looking at the image.
    lung = np.median(img.array[5:25, 0:20])           # top-left lung, about -810 HU
    muscle = np.median(img.array[80:100, 15:45])      # left paraspinal muscle, about 28 HU
    fat = np.median(img.array[118:128, :])            # subcutaneous fat at the bottom, about -96 HU
    assert -900 < lung < -700
    assert 0 < muscle < 100
    assert -150 < fat < -50
    assert img.array.min() > -1100  # nothing below air


def test_mr_small_keeps_dtype_and_window_values():
    img = read_image(dicom("MR_small.dcm"))
    assert img.modality == "MR" and img.array.dtype == np.int16 and img.array.shape == (64, 64)
    assert img.spacing == pytest.approx((0.3125, 0.3125))
    assert img.meta["WindowCenter"] == 600.0 and img.meta["WindowWidth"] == 1600.0
    assert "PatientName" not in img.meta and "PatientID" not in img.meta


def test_monochrome1_is_inverted(tmp_path):
    original = read_image(dicom("MR_small.dcm")).array
    inverted = read_image(dicom_copy(tmp_path, "MR_small.dcm", PhotometricInterpretation="MONOCHROME1"))
    assert inverted.meta["inverted"] is True
    assert inverted.array.dtype == original.dtype
    np.testing.assert_array_equal(inverted.array, -1 - original.astype(np.int32))
    # order reversed: sorted by the original, the inverted values never rise
    order = np.argsort(original, axis=None, kind="stable")
    steps = np.diff(inverted.array.ravel()[order].astype(np.int64))
    rises = np.diff(original.ravel()[order].astype(np.int64))
    assert np.all(steps <= 0) and np.all(steps[rises > 0] < 0)


def test_ybr_colour_converted_to_rgb():
    ybr = read_image(dicom("SC_ybr_full_422_uncompressed.dcm"))
    rgb = read_image(dicom("SC_rgb_rle.dcm"))  # the same picture stored as RGB
    raw = pydicom.pixels.pixel_array(dicom("SC_ybr_full_422_uncompressed.dcm"), raw=True)
    assert ybr.array.shape == rgb.array.shape == (100, 100, 3) and ybr.array.dtype == np.uint8
    diff = np.abs(ybr.array.astype(int) - rgb.array.astype(int))
    assert diff.mean() < 2 and diff.max() <= 8
    assert np.abs(raw.astype(int) - rgb.array.astype(int)).mean() > 20  # unconverted would fail


def test_colour_ultrasound_cine():
    path = dicom("examples_ybr_color.dcm")  # US, YBR_FULL_422, 30 frames, JPEG baseline (Pillow)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no PixelSpacing is normal for ultrasound: no warning
        img = read_image(path)
    assert img.modality == "US" and img.meta["PhotometricInterpretation"] == "YBR_FULL_422"
    assert img.array.shape == (30, 240, 320, 3) and img.array.dtype == np.uint8
    assert img.spacing is None and img.meta["frame_axis"] == "frames"
    # a grey-scale ultrasound picture: after YBR -> RGB the three channels nearly agree
    a = img.array.astype(int)
    assert np.abs(a[..., 0] - a[..., 1]).mean() < 3 and np.abs(a[..., 0] - a[..., 2]).mean() < 3
    assert a.max() > 100


def test_palette_colour_ultrasound():
    img = read_quietly(dicom("examples_palette.dcm"))
    assert img.modality == "US" and img.array.shape == (350, 800, 3)


def test_multiframe_without_slice_spacing_has_frames_first():
    img = read_image(dicom("rtdose.dcm"))
    assert img.array.shape == (15, 10, 10)
    assert img.spacing == (10.0, 10.0) and img.meta["frame_axis"] == "frames"


@pytest.mark.parametrize("keyword", ["SpacingBetweenSlices", "SliceThickness"])
def test_multiframe_with_slice_spacing_is_a_volume(tmp_path, keyword):
    img = read_image(dicom_copy(tmp_path, "rtdose.dcm", **{keyword: "2.5"}))
    assert img.array.shape == (15, 10, 10)
    assert img.spacing == (2.5, 10.0, 10.0) and img.meta["frame_axis"] == "slices"


def test_multiframe_rgb():
    img = read_image(dicom("SC_rgb_rle_2frame.dcm"))
    assert img.array.shape == (2, 100, 100, 3)


@pytest.mark.parametrize("spacing", [["0", "0"], ["-0.5", "0.5"], ["nan", "nan"], ["0.5"]])
def test_nonsense_pixel_spacing_gives_none_and_warns(tmp_path, spacing):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warning about the invalid DS 'nan'
        path = dicom_copy(tmp_path, "CT_small.dcm", out="bad_spacing.dcm", PixelSpacing=spacing)
    with pytest.warns(UserWarning, match="bad_spacing.dcm"):
        img = read_image(path)
    assert img.spacing is None
    assert img.array.shape == (128, 128)


def test_format_from_content_not_extension(tmp_path):
    wrong_name = tmp_path / "scan.png"
    wrong_name.write_bytes(open(dicom("CT_small.dcm"), "rb").read())
    assert read_image(wrong_name).meta["format"] == "DICOM"


def test_dicom_without_preamble_is_read_by_extension(tmp_path):
    data = open(dicom("CT_small.dcm"), "rb").read()
    assert data[128:132] == b"DICM"
    path = tmp_path / "no_preamble.dcm"
    path.write_bytes(data[132:])
    np.testing.assert_array_equal(read_image(path).array, read_image(dicom("CT_small.dcm")).array)


# --- errors ----------------------------------------------------------------------------------

def assert_read_error(path, *words):
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word.lower() in message.lower(), message
    return info.value


def test_missing_file(tmp_path):
    assert_read_error(tmp_path / "nothing.dcm", "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert_read_error(path, "empty")


def test_directory(tmp_path):
    assert_read_error(tmp_path, "directory")


def test_truncated_dicom(tmp_path):
    data = open(dicom("CT_small.dcm"), "rb").read()
    path = tmp_path / "half.dcm"
    path.write_bytes(data[: len(data) // 2])
    err = assert_read_error(path, "DICOM")
    assert err.__cause__ is not None  # pydicom's error kept as the cause


def test_random_bytes_with_dcm_extension(tmp_path):
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_read_error(path, "DICOM")


def test_unsupported_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    assert_read_error(path, "unrecognised", "supported formats", "DICOM", "NIfTI", "PNG", "JPEG", "npz")


def test_unsupported_gif(tmp_path):
    path = tmp_path / "anim.gif"
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    assert_read_error(path, "GIF", "supported formats")


def test_truncated_nifti_gz(tmp_path):
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), np.eye(4)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = assert_read_error(path, "NIfTI", "truncated")
    assert err.__cause__ is not None


def test_gzip_with_a_corrupt_stream(tmp_path):
    path = tmp_path / "vol.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes())
    err = assert_read_error(path, "gzip", "corrupt")
    assert err.__cause__ is not None


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    assert_read_error(path, "PNG")


# --- NIfTI -----------------------------------------------------------------------------------

SHAPE = (4, 5, 6)  # (x, y, z), all different so that a wrong transpose shows


def ras_volume():
    data = np.zeros(SHAPE, np.int16)
    data[1, 0, 2] = 7  # x=1 (near patient right), y=0 (most posterior), z=2
    return data, np.diag([0.5, 0.8, 3.0, 1.0])


def expected_position():
    # documented layout (S, P, L): slice = z, row = ny-1-y, column = nx-1-x for an RAS+ file
    return (2, SHAPE[1] - 1 - 0, SHAPE[0] - 1 - 1)


def test_nifti_spacing_and_known_voxel(tmp_path):
    data, affine = ras_volume()
    path = tmp_path / "aniso.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    img = read_image(path)
    assert img.array.shape == (6, 5, 4)
    assert img.spacing == pytest.approx((3.0, 0.8, 0.5))
    assert img.meta["format"] == "NIfTI-1" and img.meta["zooms"] == pytest.approx((0.5, 0.8, 3.0))
    assert img.array[expected_position()] == 7 and img.array.sum() == 7
    np.testing.assert_array_equal(img.array, data.transpose(2, 1, 0)[:, ::-1, ::-1])
    assert img.array.flags["C_CONTIGUOUS"]


def test_nifti_same_anatomy_in_other_storage_orders(tmp_path):
    data, affine = ras_volume()
    reference = read_image(_save(tmp_path / "ras.nii", data, affine))
    # stored left-to-right and anterior-to-posterior (LPS), and with the axes stored as (z, x, y)
    lps = _save(tmp_path / "lps.nii", data[::-1, ::-1, :], affine @ _flip_aff(SHAPE, (0, 1)))
    perm = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # (z,x,y) -> (x,y,z)
    zxy = _save(tmp_path / "zxy.nii", data.transpose(2, 0, 1), affine @ perm)
    for path in (lps, zxy):
        img = read_image(path)
        np.testing.assert_array_equal(img.array, reference.array)
        assert img.spacing == pytest.approx(reference.spacing)


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    return path


def _flip_aff(shape, axes):
    flip = np.eye(4)
    for ax in axes:
        flip[ax, ax] = -1
        flip[ax, 3] = shape[ax] - 1
    return flip


def test_nifti_4d_time_first(tmp_path):
    data, affine = ras_volume()
    series = np.stack([data * t for t in range(1, 4)], axis=-1)  # (x, y, z, t)
    img = read_image(_save(tmp_path / "series.nii.gz", series, affine))
    assert img.array.shape == (3, 6, 5, 4)
    assert img.spacing == pytest.approx((3.0, 0.8, 0.5))
    assert [img.array[(t,) + expected_position()] for t in range(3)] == [7, 14, 21]


def test_nifti_under_another_name(tmp_path):
    data, affine = ras_volume()
    path = _save(tmp_path / "vol.nii.gz", data, affine)
    renamed = tmp_path / "volume.bin"
    renamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read_image(renamed).array, read_image(path).array)


def _check_affine_and_orientation(img, original):
    """The returned meta affine maps the brightest voxel to the same world point as the file did."""
    data = np.asarray(original.dataobj)
    data = data[..., 0] if data.ndim == 4 else data
    arr = img.array[0] if img.array.ndim == 4 else img.array
    src = np.unravel_index(np.argmax(data), data.shape)
    dst = np.unravel_index(np.argmax(arr), arr.shape)
    world_src = original.affine @ np.r_[src, 1]
    world_dst = np.asarray(img.meta["affine"]) @ np.r_[dst, 1]
    np.testing.assert_allclose(world_dst, world_src, atol=1e-3)
    # slices run to superior (+z), rows to posterior (-y), columns to the patient's left (-x)
    axes = np.asarray(img.meta["affine"])[:3, :3]
    dominant = np.argmax(np.abs(axes), axis=0)
    assert list(dominant) == [2, 1, 0]
    assert axes[2, 0] > 0 and axes[1, 1] < 0 and axes[0, 2] < 0


@pytest.mark.parametrize("name, shape, spacing, fmt", [
    ("anatomical.nii", (25, 41, 33), (2.0, 2.0, 2.0), "NIfTI-1"),
    ("example4d.nii.gz", (2, 24, 96, 128), (2.2, 2.0, 2.0), "NIfTI-1"),
    ("example_nifti2.nii.gz", (2, 12, 20, 32), (2.2, 2.0, 2.0), "NIfTI-2"),
])
def test_nibabel_files(name, shape, spacing, fmt):
    path = os.path.join(NIBABEL_DATA, name)
    img = read_image(path)
    assert img.array.shape == shape and img.meta["format"] == fmt
    assert img.spacing == pytest.approx(spacing, abs=1e-5)
    assert img.array.dtype.isnative and img.modality == "unknown"
    _check_affine_and_orientation(img, nib.load(path))


def test_mni152_template(tmp_path):
    nilearn_datasets = pytest.importorskip("nilearn.datasets")
    template = nilearn_datasets.load_mni152_template()
    path = tmp_path / "mni152.nii.gz"
    nib.save(template, path)
    img = read_image(path)
    x, y, z = template.shape
    assert img.array.shape == (z, y, x) and img.spacing == pytest.approx((1.0, 1.0, 1.0))
    _check_affine_and_orientation(img, nib.load(path))
    # the bottom slices (below the skull base, slices run inferior -> superior) are darker than the middle
    arr = img.array.astype(float)
    assert arr[: z // 6].mean() < arr[z // 3: 2 * z // 3].mean()


# --- PNG, JPEG, NumPy ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def retina():
    skdata = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skdata.retina()[::4, ::4])


def test_png_rgb_exact(tmp_path, retina):
    path = tmp_path / "retina.png"
    PILImage.fromarray(retina).save(path)
    img = read_image(path)
    np.testing.assert_array_equal(img.array, retina)
    assert img.spacing is None and img.modality == "unknown" and img.meta["format"] == "PNG"


def test_jpeg_rgb_and_grey(tmp_path, retina):
    path = tmp_path / "retina.jpg"
    PILImage.fromarray(retina).save(path, quality=95)
    img = read_image(path)
    assert img.array.shape == retina.shape and img.meta["format"] == "JPEG"
    assert np.abs(img.array.astype(int) - retina).mean() < 3
    grey = retina[..., 1]
    PILImage.fromarray(grey).save(path, quality=95)
    assert read_image(path).array.shape == grey.shape


def test_png_rgba_drops_alpha_and_palette_becomes_rgb(tmp_path, retina):
    rgba = np.dstack([retina, np.full(retina.shape[:2], 128, np.uint8)])
    path = tmp_path / "rgba.png"
    PILImage.fromarray(rgba).save(path)
    np.testing.assert_array_equal(read_image(path).array, retina)
    PILImage.fromarray(retina).convert("P").save(path)
    assert read_image(path).array.shape == retina.shape


def test_png_16bit_kept(tmp_path):
    arr = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 31).astype(np.uint16)
    path = tmp_path / "deep.png"
    PILImage.fromarray(arr).save(path)
    img = read_image(path)
    assert img.array.dtype == np.uint16
    np.testing.assert_array_equal(img.array, arr)


def test_npy_and_npz(tmp_path):
    vol = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32)
    np.save(tmp_path / "v.npy", vol)
    np.testing.assert_array_equal(read_image(tmp_path / "v.npy").array, vol)
    np.savez(tmp_path / "v.npz", image=vol, spacing=np.array([2.0, 0.5, 0.5]), modality="CT")
    img = read_image(tmp_path / "v.npz")
    np.testing.assert_array_equal(img.array, vol)
    assert img.spacing == (2.0, 0.5, 0.5) and img.modality == "CT"
    np.savez(tmp_path / "one.npz", vol)
    np.testing.assert_array_equal(read_image(tmp_path / "one.npz").array, vol)


def test_npz_ambiguous_and_bad_spacing(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.ones(2))
    assert_read_error(tmp_path / "two.npz", "image")
    np.savez(tmp_path / "bad.npz", image=np.zeros((4, 4)), spacing=np.array([0.0, 1.0]))
    with pytest.warns(UserWarning, match="bad.npz"):
        assert read_image(tmp_path / "bad.npz").spacing is None


def test_image_repr_is_short():
    text = repr(read_image(dicom("CT_small.dcm")))
    assert "shape=(128, 128)" in text and "CT" in text and len(text) < 200


# --- window ----------------------------------------------------------------------------------

def test_window_values():
    hu = np.array([-2000, -1000, -600, -100, 0, 40, 150, 3000], np.int16)
    out = window(hu, -600, 1500)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(out, np.clip((hu + 1350) / 1500, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(window(hu, "lung"), out)
    mediastinum = window(hu, "mediastinum")
    assert mediastinum[0] == 0 and mediastinum[-1] == 1 and mediastinum[5] == pytest.approx(0.5)


def test_window_presets():
    assert WINDOWS["lung"] == (-600, 1500) and WINDOWS["mediastinum"] == (40, 400)
    assert WINDOWS["bone"] == (400, 1800) and WINDOWS["brain"] == (40, 80)


def test_window_errors():
    with pytest.raises(ValueError) as info:
        window(np.zeros(3), "liverish")
    assert all(name in str(info.value) for name in WINDOWS)
    with pytest.raises(ValueError, match="positive"):
        window(np.zeros(3), 40, 0)


def test_window_on_ct():
    shown = window(read_image(dicom("CT_small.dcm")).array, "lung")
    assert shown.min() >= 0 and shown.max() <= 1 and 0.1 < shown.mean() < 0.9
