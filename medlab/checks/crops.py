"""Exercises on cutting a region of interest out of an image around a mask (lesson 06's cascade).

* 06.1 the box around a mask: the first and last rows and columns where the
  mask is on, grown by ``margin`` pixels on every side, clipped to the image,
  as ``(row0, row1, col0, col1)`` with the ends excluded (so that
  ``image[row0:row1, col0:col1]`` is the box); an empty mask (stage 1 found
  nothing) gives the whole image.
* 06.2 the stage-2 input: the image cut to that box (with the mask, cut the
  same way, as one more channel when asked), padded with zeros to a square
  (evenly, the odd pixel after) so that resizing does not stretch the nodule,
  and resized bilinearly to ``size x size``.

The references are :func:`box_from_mask` and :func:`stage2_input`; lesson 06
writes both in view and checks them here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Case, Exercise, register

__all__ = ["box_from_mask", "stage2_input"]


# ---------------------------------------------------------------------------------------
# the references, with the learner's signatures
# ---------------------------------------------------------------------------------------
def box_from_mask(mask: torch.Tensor, margin: int) -> tuple[int, int, int, int]:
    """The box around a boolean mask ``(H, W)``: ``(row0, row1, col0, col1)``, ends excluded.

    The rows and columns where the mask is on, ``margin`` pixels more on each
    side, clipped to the image; an empty mask gives the whole image ``(0, H, 0, W)``.
    """
    height, width = mask.shape
    rows = torch.nonzero(mask.any(dim=1)).flatten()  # rows with at least one mask pixel
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:  # nothing found: keep the whole image
        return 0, height, 0, width
    row0, row1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height)
    col0, col1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width)
    return row0, row1, col0, col1


def stage2_input(image: torch.Tensor, mask: torch.Tensor, box, size: int, with_mask: bool = False) -> torch.Tensor:
    """What stage 2 sees: ``image`` ``(C, H, W)`` cut to ``box``, padded to a square, resized to ``size``.

    With ``with_mask`` the mask ``(H, W)``, cut the same way, is appended as the
    last channel (as 0./1. floats). The short side is padded with zeros, evenly
    (the odd pixel after); the square is resized with
    ``F.interpolate(..., mode="bilinear", align_corners=False)``. Returns
    ``(C (+1), size, size)`` float.
    """
    row0, row1, col0, col1 = box
    crop = image[:, row0:row1, col0:col1]
    if with_mask:
        crop = torch.cat([crop, mask[None, row0:row1, col0:col1].float()])
    height, width = crop.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    crop = F.pad(crop, (left, side - width - left, top, side - height - top))
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0]


# ---------------------------------------------------------------------------------------
# 06.1 box from mask
# ---------------------------------------------------------------------------------------
def _ellipse(g, height, width, centre=None, radii=None):
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    if centre is None:
        centre = (float(torch.randint(4, height - 4, (1,), generator=g)), float(torch.randint(4, width - 4, (1,),
                                                                                           generator=g)))
    if radii is None:
        radii = (1.5 + 4 * float(torch.rand(1, generator=g)), 1.5 + 6 * float(torch.rand(1, generator=g)))
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1


def _box_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    wide = torch.zeros(32, 48, dtype=torch.bool)
    wide[10:14, 8:30] = True  # 4 rows, 22 columns
    single = torch.zeros(20, 20, dtype=torch.bool)
    single[7, 12] = True
    corner = torch.zeros(24, 24, dtype=torch.bool)
    corner[0:3, 0:5] = True
    far_corner = torch.zeros(24, 30, dtype=torch.bool)
    far_corner[20:, 26:] = True
    two_blobs = _ellipse(g, 40, 40, (10, 10), (3, 3)) | _ellipse(g, 40, 40, (28, 33), (4, 2))
    cases = [
        Case("a wide rectangle (rows 10-13, columns 8-29) in a 32 x 48 image, margin 2", (wide, 2)),
        Case("a single pixel at row 7, column 12, margin 0 (the box is that one pixel)", (single, 0)),
        Case("a mask in the top-left corner, margin 3 (the box must stop at row 0 and column 0)", (corner, 3)),
        Case("a mask in the bottom-right corner of a 24 x 30 image, margin 0 (the box ends at the last row)",
             (far_corner, 0)),
        Case("the same bottom-right mask, margin 4 (clip at the bottom and right edges)", (far_corner, 4)),
        Case("an empty 16 x 24 mask (stage 1 found nothing)", (torch.zeros(16, 24, dtype=torch.bool), 3)),
        Case("two separate blobs (the box covers both)", (two_blobs, 1)),
    ]
    for i in range(4):
        height, width = (int(v) for v in torch.randint(16, 48, (2,), generator=g))
        cases.append(Case(f"a random ellipse in a {height} x {width} image, margin {i}",
                          (_ellipse(g, height, width), i)))
    return cases


def _as_box(got):
    if hasattr(got, "tolist") and not isinstance(got, (tuple, list)):
        return None
    try:
        return tuple(int(v) for v in got)
    except (TypeError, ValueError):
        return None


def _compare_box(got, expected, case) -> str | None:
    box = _as_box(got)
    if box is None or len(box) != 4:
        return f"the result should be a tuple (row0, row1, col0, col1) of 4 whole numbers, got {got!r}"[:160]
    if box == tuple(expected):
        return None
    mask = case.args[0]
    height, width = mask.shape
    row0, row1, col0, col1 = box
    if not mask.any():
        return f"for an empty mask the box should be the whole image {tuple(expected)}, got {box}"
    if row0 < 0 or col0 < 0 or row1 > height or col1 > width:
        return f"the box {box} reaches outside the {height} x {width} image: clip it (expected {tuple(expected)})"
    if (col0, col1, row0, row1) == tuple(expected):
        return f"rows and columns are swapped: got {box}, expected {tuple(expected)}"
    return f"got the box {box}, expected {tuple(expected)} (row0, row1, col0, col1; the ends excluded)"


register(Exercise(
    key="06.1", title="box from mask", reference=box_from_mask, cases=_box_cases, compare=_compare_box,
    hint="rows = torch.nonzero(mask.any(dim=1)) are the rows with mask pixels (dim=0 gives the columns); the end "
         "is the last index + 1 (excluded), then + margin; clip with max(..., 0) and min(..., H or W); return "
         "(0, H, 0, W) when there are no rows at all.",
))


# ---------------------------------------------------------------------------------------
# 06.2 the stage-2 input
# ---------------------------------------------------------------------------------------
def _stage2_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)

    def image(channels, height, width):
        return torch.rand(channels, height, width, generator=g)

    def blob(height, width):
        return _ellipse(g, height, width)

    return [
        Case("a 1-channel 40 x 40 image, a wide box (8 rows, 20 columns), size 16",
             (image(1, 40, 40), blob(40, 40), (10, 18, 6, 26), 16, False)),
        Case("a 1-channel 40 x 40 image, a tall box (21 rows, 10 columns), size 24, with the mask channel",
             (image(1, 40, 40), blob(40, 40), (5, 26, 12, 22), 24, True)),
        Case("a 3-channel 32 x 48 image, a square box, size 32 (enlarging), with the mask channel",
             (image(3, 32, 48), blob(32, 48), (4, 20, 20, 36), 32, True)),
        Case("the whole 24 x 36 image as the box (an empty mask's fallback), size 16",
             (image(1, 24, 36), torch.zeros(24, 36, dtype=torch.bool), (0, 24, 0, 36), 16, True)),
        Case("a box at the bottom-right border of a 30 x 30 image, size 20, with the mask channel",
             (image(1, 30, 30), blob(30, 30), (17, 30, 22, 30), 20, True)),
        Case("a 2-channel 28 x 28 image, a box of odd height and width (7 x 12), size 12",
             (image(2, 28, 28), blob(28, 28), (3, 10, 9, 21), 12, False)),
    ]


def _compare_stage2(got, expected, case) -> str | None:
    from . import compare

    if not hasattr(got, "shape"):
        return f"the result should be a tensor (C, size, size), got {type(got).__name__}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"the result has shape {tuple(got.shape)}, expected {tuple(expected.shape)} (channels, size, size)"
    image, mask, box, size, with_mask = case.args
    wrong = compare(got, expected, 1e-5, 1e-4)
    if wrong is None:
        return None
    if with_mask and compare(got[:-1], expected[:-1], 1e-5, 1e-4) is None:
        return ("the image channels are right but the mask channel (the last one) is not: "
                f"{compare(got[-1], expected[-1], 1e-5, 1e-4, 'the mask channel')}")
    if with_mask:  # image and mask channel together, cut as the reference cuts them
        image = torch.cat([image, mask[None].float()])
    row0, row1, col0, col1 = box
    crop = image[:, row0:row1, col0:col1]
    stretched = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    if compare(got, stretched, 1e-5, 1e-4) is None:
        return "the crop was resized without padding it to a square first: the nodule is stretched"
    side = max(crop.shape[-2:])
    top, left = (side - crop.shape[-2]) // 2, (side - crop.shape[-1]) // 2
    square = F.pad(crop, (left, side - crop.shape[-1] - left, top, side - crop.shape[-2] - top))
    corners = F.interpolate(square[None], size=(size, size), mode="bilinear", align_corners=True)[0]
    if compare(got, corners, 1e-5, 1e-4) is None:
        return "right up to the resize: use align_corners=False (the pixel-centre convention), not True"
    return wrong


register(Exercise(
    key="06.2", title="the stage-2 input: crop, pad to a square, resize", reference=stage2_input,
    cases=_stage2_cases, compare=_compare_stage2,
    hint="crop = image[:, row0:row1, col0:col1] (keep the channel axis); for the mask channel cut "
         "mask[None, row0:row1, col0:col1] the same way, .float(), torch.cat after the image channels; pad the "
         "short side to a square with F.pad(crop, (left, right, top, bottom)), left = (side - w) // 2; then "
         "F.interpolate(crop[None], size=(size, size), mode='bilinear', align_corners=False)[0].",
))
