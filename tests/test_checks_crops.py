"""Lesson 06's exercises (medlab.checks.crops): the references pass, the natural mistakes fail, a stub stops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medlab import checks
from medlab.checks import crops


def _fails(key, fn):
    passed, failure = checks.run_cases(checks.exercises()[key], fn)
    assert failure is not None, f"{key}: a wrong answer passed all {passed} cases"
    return failure


@pytest.mark.parametrize("key, reference", [("06.1", crops.box_from_mask), ("06.2", crops.stage2_input)])
def test_the_references_pass_and_are_recorded(key, reference):
    assert checks.check(key, reference, quiet=True) is reference
    assert checks.RESULTS[key] == "passed"


def test_a_wrong_answer_is_replaced_by_the_reference_and_recorded():
    def swapped(mask, margin):
        row0, row1, col0, col1 = crops.box_from_mask(mask, margin)
        return col0, col1, row0, row1

    assert checks.check("06.1", swapped, quiet=True) is crops.box_from_mask
    assert checks.RESULTS["06.1"].startswith("failed") and "swapped" in checks.RESULTS["06.1"]


# ---------------------------------------------------------------------------------------
# 06.1 known-wrong boxes
# ---------------------------------------------------------------------------------------
def _rows_cols(mask):
    return torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()


def box_rows_and_columns_swapped(mask, margin):
    height, width = mask.shape
    cols, rows = _rows_cols(mask)  # dim=1 taken for the columns
    if len(rows) == 0:
        return 0, height, 0, width
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width))


def box_end_included(mask, margin):
    height, width = mask.shape
    rows, cols = _rows_cols(mask)
    if len(rows) == 0:
        return 0, height, 0, width
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin, height),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin, width))


def box_not_clipped(mask, margin):
    height, width = mask.shape
    rows, cols = _rows_cols(mask)
    if len(rows) == 0:
        return 0, height, 0, width
    return int(rows[0]) - margin, int(rows[-1]) + 1 + margin, int(cols[0]) - margin, int(cols[-1]) + 1 + margin


def box_crashes_on_an_empty_mask(mask, margin):
    height, width = mask.shape
    rows, cols = _rows_cols(mask)
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width))


def box_empty_mask_gives_nothing(mask, margin):
    if not mask.any():
        return 0, 0, 0, 0
    return crops.box_from_mask(mask, margin)


def box_margin_forgotten(mask, margin):
    return crops.box_from_mask(mask, 0)


def box_as_a_tensor(mask, margin):
    return torch.tensor(crops.box_from_mask(mask, margin))


@pytest.mark.parametrize("wrong, says", [
    (box_rows_and_columns_swapped, "swapped"),
    (box_end_included, "ends excluded"),
    (box_not_clipped, "clip"),
    (box_crashes_on_an_empty_mask, "raised"),
    (box_empty_mask_gives_nothing, "whole image"),
    (box_margin_forgotten, "expected"),
    (box_as_a_tensor, "tuple"),
])
def test_box_from_mask_fails_the_known_mistakes(wrong, says):
    assert says in _fails("06.1", wrong)


def test_box_from_mask_accepts_a_tuple_of_tensor_numbers():
    def tensor_items(mask, margin):
        return tuple(torch.tensor(v) for v in crops.box_from_mask(mask, margin))

    assert checks.run_cases(checks.exercises()["06.1"], tensor_items)[1] is None


def test_the_reference_box_on_a_small_example():
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2:4, 9:11] = True
    assert crops.box_from_mask(mask, 1) == (1, 5, 8, 12)  # clipped at column 12
    assert crops.box_from_mask(torch.zeros(5, 7, dtype=torch.bool), 2) == (0, 5, 0, 7)


# ---------------------------------------------------------------------------------------
# 06.2 known-wrong stage-2 inputs
# ---------------------------------------------------------------------------------------
def _resize(crop, size, align_corners=False):
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=align_corners)[0]


def _pad_square(crop):
    height, width = crop.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return F.pad(crop, (left, side - width - left, top, side - height - top))


def _with_mask(crop, mask, box, with_mask):
    row0, row1, col0, col1 = box
    return torch.cat([crop, mask[None, row0:row1, col0:col1].float()]) if with_mask else crop


def stage2_rows_and_columns_swapped(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    crop = image[:, col0:col1, row0:row1]
    if with_mask:
        crop = torch.cat([crop, mask[None, col0:col1, row0:row1].float()])
    return _resize(_pad_square(crop), size)


def stage2_stretched(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    return _resize(_with_mask(image[:, row0:row1, col0:col1], mask, box, with_mask), size)


def stage2_padded_at_the_end(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    crop = _with_mask(image[:, row0:row1, col0:col1], mask, box, with_mask)
    side = max(crop.shape[-2:])
    crop = F.pad(crop, (0, side - crop.shape[-1], 0, side - crop.shape[-2]))
    return _resize(crop, size)


def stage2_align_corners(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    return _resize(_pad_square(_with_mask(image[:, row0:row1, col0:col1], mask, box, with_mask)), size, True)


def stage2_mask_not_cropped(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    crop = _resize(_pad_square(image[:, row0:row1, col0:col1]), size)
    if with_mask:
        whole = _resize(mask[None].float(), size)
        crop = torch.cat([crop, whole])
    return crop


def stage2_mask_channel_first(image, mask, box, size, with_mask=False):
    out = crops.stage2_input(image, mask, box, size, with_mask)
    return torch.cat([out[-1:], out[:-1]]) if with_mask else out


def stage2_channel_axis_sliced(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    crop = image[row0:row1, col0:col1]  # slices the channels, not the rows
    return _resize(_pad_square(_with_mask(crop, mask, box, with_mask)), size)


def stage2_not_resized(image, mask, box, size, with_mask=False):
    row0, row1, col0, col1 = box
    return _pad_square(_with_mask(image[:, row0:row1, col0:col1], mask, box, with_mask))


@pytest.mark.parametrize("wrong, says", [
    (stage2_rows_and_columns_swapped, "differ"),
    (stage2_stretched, "without padding"),
    (stage2_padded_at_the_end, "differ"),
    (stage2_align_corners, "align_corners=False"),
    (stage2_mask_not_cropped, "mask channel"),
    (stage2_mask_channel_first, "differ"),
    (stage2_channel_axis_sliced, ""),
    (stage2_not_resized, "shape"),
])
def test_stage2_input_fails_the_known_mistakes(wrong, says):
    assert says in _fails("06.2", wrong)


def test_the_reference_stage2_input_keeps_the_shape_and_the_mask_binary_inside():
    image = torch.zeros(1, 20, 20)
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[5:15, 8:12] = True  # tall: 10 rows, 4 columns
    image[0][mask] = 1.0
    out = crops.stage2_input(image, mask, (5, 15, 8, 12), 10, with_mask=True)
    assert out.shape == (2, 10, 10)
    assert torch.equal(out[0], out[1])  # the image is the mask here
    assert out[1, :, :2].max() < 0.5 and out[1, :, -2:].max() < 0.5  # padded left and right: not stretched
    assert out[1, :, 4:6].min() == pytest.approx(1.0)


def test_the_lesson_writes_the_reference_crops():
    from notebook_cells import run_tagged

    ns = run_tagged("06_cascade_segment_then_classify", "technique", {"K": {"margin": 2, "crop_size": 16}})
    assert checks.RESULTS["06.1"] == "passed" and checks.RESULTS["06.2"] == "passed"
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 32, 32, generator=g)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, 3:9, 20:31] = True
    masks[1, 25:32, 0:4] = True  # masks[2] stays empty
    expected = torch.stack([crops.stage2_input(x, m, crops.box_from_mask(m, 2), 16, True)
                            for x, m in zip(images, masks)])
    assert torch.allclose(ns["stage2_inputs"](images, masks, "crop+mask"), expected)
    assert ns["stage2_inputs"](images, masks, "crop").shape == (3, 1, 16, 16)
    assert ns["stage2_inputs"](images, masks, "whole") is images
