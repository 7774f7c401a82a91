"""core.face on real photos: hand-drawn boxes, chip geometry, EXIF, large photos, no-face photos, threads."""

from __future__ import annotations

import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.face import Box, FaceAligner
from core.image import decode_image, read_image


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two inclusive (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0]) + 1
    height = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(width, 0) * max(height, 0)

    def area(box: Box) -> int:
        return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)

    return inter / (area(a) + area(b) - inter)


def hand_boxes(xml_file: Path) -> dict[str, list[Box]]:
    """Boxes of a dlib imglab XML file, keyed by image file name."""
    boxes = {}
    for image in ET.parse(xml_file).getroot().iter("image"):
        boxes[image.get("file", "")] = [
            (
                int(b.get("left", 0)),
                int(b.get("top", 0)),
                int(b.get("left", 0)) + int(b.get("width", 0)) - 1,
                int(b.get("top", 0)) + int(b.get("height", 0)) - 1,
            )
            for b in image.iter("box")
        ]
    return boxes


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(chip_size=128, padding=0.4)


@pytest.fixture(scope="module")
def astronaut(fixtures_dir: Path) -> np.ndarray:
    return read_image(fixtures_dir / "astronaut.png")


def test_import_does_not_load_tensorflow() -> None:
    code = "import sys, core.face, core.image; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_astronaut_has_one_face_with_a_chip_of_the_requested_size(aligner: FaceAligner, astronaut: np.ndarray) -> None:
    faces = aligner.align(astronaut)
    assert len(faces) == 1
    left, top, right, bottom = faces[0].box
    assert all(isinstance(v, int) for v in faces[0].box)
    # Eileen Collins' face sits in the upper middle of the 512x512 portrait.
    assert 120 < left < right < 320
    assert 30 < top < bottom < 220
    assert faces[0].chip.shape == (128, 128, 3)
    assert faces[0].chip.dtype == np.uint8
    assert faces[0].score > 0


def test_chip_size_and_padding_are_honoured(astronaut: np.ndarray) -> None:
    tight = FaceAligner(chip_size=64, padding=0.0).align(astronaut)[0].chip
    loose = FaceAligner(chip_size=64, padding=1.0).align(astronaut)[0].chip
    assert tight.shape == loose.shape == (64, 64, 3)
    # With more padding the face fills less of the chip: the centre crop of the loose chip, scaled up, looks like
    # the tight chip much more than the loose chip itself does.
    centre = np.asarray(Image.fromarray(loose[16:48, 16:48]).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(centre.astype(int) - tight).mean() < np.abs(loose.astype(int) - tight).mean()


def test_most_hand_drawn_boxes_are_found(faces_dir: Path) -> None:
    # dlib's example photos hold faces of ~40 pixels, half the HOG window: one upsampling step finds them.
    finder = FaceAligner(chip_size=64, padding=0.25, upsample=1)
    found = total = spurious = 0
    for xml_name in ("training.xml", "testing.xml"):
        for file_name, boxes in hand_boxes(faces_dir / xml_name).items():
            faces = finder.align(read_image(faces_dir / file_name))
            total += len(boxes)
            found += sum(max((iou(h, f.box) for f in faces), default=0.0) > 0.4 for h in boxes)
            spurious += sum(max(iou(h, f.box) for h in boxes) <= 0.4 for f in faces)
    assert total > 40
    assert found >= 0.9 * total
    assert spurious <= 2


def test_faces_come_largest_first(fixtures_dir: Path) -> None:
    faces = FaceAligner(chip_size=32, padding=0.25).align(read_image(fixtures_dir / "2008_002506.jpg"))
    areas = [(f.box[2] - f.box[0] + 1) * (f.box[3] - f.box[1] + 1) for f in faces]
    assert len(faces) == 3
    assert areas == sorted(areas, reverse=True)


def test_exif_rotated_copy_yields_the_same_face(aligner: FaceAligner, astronaut: np.ndarray) -> None:
    def jpeg(image: Image.Image, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95, **options)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90 degrees clockwise-to-upright, as phones do
    upright = decode_image(jpeg(Image.fromarray(astronaut)))
    rotated = decode_image(jpeg(Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90), exif=exif))
    a, b = aligner.align(upright), aligner.align(rotated)
    assert len(a) == len(b) >= 1
    assert iou(a[0].box, b[0].box) > 0.9
    assert np.abs(a[0].chip.astype(int) - b[0].chip).mean() < 6


def test_large_photo_is_searched_downscaled_and_mapped_back(astronaut: np.ndarray) -> None:
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.Resampling.BICUBIC))
    small_face = FaceAligner(chip_size=128, padding=0.4, max_detect_side=512).align(astronaut)[0]
    big_face = FaceAligner(chip_size=128, padding=0.4, max_detect_side=512).align(big)[0]
    scaled = tuple(4 * v for v in small_face.box)
    assert iou(big_face.box, scaled) > 0.85  # type: ignore[arg-type]
    assert big_face.chip.shape == (128, 128, 3)
    assert np.abs(big_face.chip.astype(int) - small_face.chip).mean() < 12


@pytest.mark.parametrize("chip_size", [64, 256])
def test_large_photo_chips_match_a_full_size_search(astronaut: np.ndarray, chip_size: int) -> None:
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.Resampling.BICUBIC))
    searched_small = FaceAligner(chip_size=chip_size, padding=0.4, max_detect_side=512).align(big)[0]
    searched_full = FaceAligner(chip_size=chip_size, padding=0.4, max_detect_side=2048).align(big)[0]
    assert searched_small.chip.shape == searched_full.chip.shape == (chip_size, chip_size, 3)
    assert iou(searched_small.box, searched_full.box) > 0.8
    assert np.abs(searched_small.chip.astype(int) - searched_full.chip).mean() < 8


@pytest.mark.parametrize(
    ("shape", "copy_shape", "scale"),
    [
        ((3000, 4000), (750, 1000), 4.0),  # even whole factor: box over 4 columns x every other row of 4
        ((2250, 3000), (750, 1000), 3.0),  # odd whole factor: box over 3 x 3
        ((1500, 2100), (731, 1024), 2100 / 1024),  # 3 would leave 700 px, under 90% of 1024: filtered resize
        ((600, 1000), (600, 1000), 1.0),  # small enough: searched as it is
    ],
)
def test_search_copy_is_filtered_and_fills_most_of_max_detect_side(
    shape: tuple[int, int], copy_shape: tuple[int, int], scale: float
) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    copy, factor = FaceAligner(chip_size=64, padding=0.25)._search_copy(image)
    assert copy.shape == (*copy_shape, 3)
    assert copy.dtype == np.uint8
    assert factor == pytest.approx(scale)
    if scale == 4.0:
        blocks = image[::2].reshape(750, 2, 1000, 4, 3).astype(float).mean(axis=(1, 3))
        assert np.abs(copy - blocks).max() <= 1
    if scale == 3.0:
        blocks = image.reshape(750, 3, 1000, 3, 3).astype(float).mean(axis=(1, 3))
        assert np.abs(copy - blocks).max() <= 1
    if factor > 1:
        # Filtered, not subsampled: averaging flattens uniform noise far below its spread of 74 grey levels.
        assert copy.std() < 45


def test_box_is_clipped_to_the_image(aligner: FaceAligner, astronaut: np.ndarray) -> None:
    # The face spans about (179, 83)-(266, 170): this crop cuts through its left side and top, yet it is found.
    cropped = np.ascontiguousarray(astronaut[90:, 190:])
    faces = aligner.align(cropped)
    assert faces, "the crop must still hold the face, or the clipping below is never checked"
    for face in faces:
        left, top, right, bottom = face.box
        assert 0 <= left <= right < cropped.shape[1]
        assert 0 <= top <= bottom < cropped.shape[0]
    assert min(faces[0].box[:2]) == 0, "the detection should reach past the crop's edge and be clipped to it"


@pytest.mark.parametrize("shape", [(1, 2048), (1, 65535), (2048, 1), (1, 4097), (2, 9000), (3, 1100), (1, 1)])
def test_one_pixel_high_wide_and_extreme_aspect_images_have_no_face(aligner: FaceAligner, shape: tuple) -> None:
    # A 2048x1 photo once reduced to an empty search copy and raised "box can't be empty" (a 500 in the service).
    image = np.full((*shape, 3), 128, np.uint8)
    copy, _ = aligner._search_copy(image)
    assert copy.size > 0
    assert aligner.align(image) == []


def test_dogs_have_no_face(aligner: FaceAligner, faces_dir: Path) -> None:
    assert aligner.align(read_image(faces_dir / "dogs.jpg")) == []


def test_blank_image_has_no_face(aligner: FaceAligner) -> None:
    assert aligner.align(np.full((300, 300, 3), 128, np.uint8)) == []


def test_cnn_detector_finds_the_astronaut(astronaut: np.ndarray) -> None:
    # The MMOD CNN is slow on a CPU; searching a smaller copy (face ~70 pixels) keeps this test short.
    faces = FaceAligner(chip_size=96, padding=0.4, detector="cnn", max_detect_side=384).align(astronaut)
    assert len(faces) == 1
    assert faces[0].chip.shape == (96, 96, 3)
    assert 120 < faces[0].box[0] < faces[0].box[2] < 320


def test_one_aligner_can_serve_several_threads(aligner: FaceAligner, astronaut: np.ndarray) -> None:
    expected = aligner.align(astronaut)[0]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(aligner.align, [astronaut] * 8))
    assert all(r[0].box == expected.box and np.array_equal(r[0].chip, expected.chip) for r in results)


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)]
)
def test_wrong_arrays_are_refused(aligner: FaceAligner, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        aligner.align(bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"chip_size": 8}, "chip_size"),
        ({"padding": -0.1}, "padding"),
        ({"upsample": -1}, "upsample"),
        ({"detector": "haar"}, "detector"),
        ({"max_detect_side": 10}, "max_detect_side"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FaceAligner(**({"chip_size": 64, "padding": 0.25} | kwargs))


def test_missing_predictor_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.dat"):
        FaceAligner(chip_size=64, padding=0.25, predictor_path=tmp_path / "nope.dat")


def test_max_faces_cuts_the_detections_before_their_landmarks(faces_dir: Path) -> None:
    image = read_image(faces_dir / "bald_guys.jpg")
    every = FaceAligner(chip_size=64, padding=0.25).align(image)
    capped = FaceAligner(chip_size=64, padding=0.25, max_faces=3)
    calls = []
    predictor = capped._predictor
    capped._predictor = lambda img, rect: calls.append(rect) or predictor(img, rect)  # type: ignore[assignment]
    faces = capped.align(image)
    assert len(every) > 3
    assert len(calls) == 3, "landmarks were placed for faces that the cap then dropped"
    assert [face.box for face in faces] == [face.box for face in every[:3]]
