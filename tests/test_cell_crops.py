"""Cell crops from VOC boxes: the WBC models' input convention."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medmodels.data.cell_crops import Box, cell_crop, read_voc_boxes, square_around
from medmodels.errors import DatasetError

VOC = """<annotation><filename>x.jpg</filename>
<object><name>RBC</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
<object><name>WBC</name><bndbox><xmin>300</xmin><ymin>200</ymin><xmax>400</xmax><ymax>280</ymax></bndbox></object>
</annotation>"""


def test_voc_boxes_are_read_and_filtered_by_name(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(VOC)
    assert [b.name for b in read_voc_boxes(path)] == ["RBC", "WBC"]
    (wbc,) = read_voc_boxes(path, "WBC")
    assert (wbc.xmin, wbc.ymin, wbc.xmax, wbc.ymax, wbc.width, wbc.height) == (300, 200, 400, 280, 100, 80)


def test_unreadable_annotation_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<annotation><object>")
    with pytest.raises(DatasetError, match="bad.xml: not a readable VOC annotation"):
        read_voc_boxes(path)


def test_crop_is_a_square_centred_on_the_box() -> None:
    assert square_around(Box("WBC", 300, 200, 400, 280), (640, 480), context=1.3) == (285, 175, 415, 305)


def test_crop_near_the_edge_is_shifted_inside_the_image() -> None:
    left, top, right, bottom = square_around(Box("WBC", 0, 400, 100, 480), (640, 480), context=1.5)
    assert (left, bottom, right - left, bottom - top) == (0, 480, 150, 150)
    # A box larger than the image gives the largest square the image holds.
    assert square_around(Box("WBC", 0, 0, 640, 480), (640, 480)) == (80, 0, 560, 480)


def test_cell_crop_keeps_the_cell_pixels() -> None:
    image = Image.new("RGB", (640, 480), (200, 200, 200))
    image.paste((90, 40, 160), (300, 200, 400, 280))  # the "cell"
    crop = cell_crop(image, Box("WBC", 300, 200, 400, 280))
    assert crop.size == (130, 130)
    assert crop.getpixel((65, 65)) == (90, 40, 160)
    assert crop.getpixel((0, 0)) == (200, 200, 200)
