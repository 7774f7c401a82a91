"""age-demo decodes a large photo reduced, as age-serve does, and still answers boxes in full-size pixels."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from core.face import FaceAligner
from service.demo import Found, find_faces


def test_a_large_photo_is_decoded_reduced_and_its_boxes_are_full_size(tmp_path: Path, fixtures_dir: Path) -> None:
    photo = Image.open(fixtures_dir / "2008_001009.jpg").convert("RGB")
    large = tmp_path / "large.jpg"
    photo.resize((photo.width * 8, photo.height * 8), Image.Resampling.BICUBIC).save(large, quality=90)
    aligner = FaceAligner(chip_size=64, padding=0.25)

    full = find_faces(large, aligner, max_faces=5, max_pixels=10**8)
    reduced = find_faces(large, aligner, max_faces=5, max_pixels=10**8, decode_side=1536)

    assert isinstance(full, Found)
    assert isinstance(reduced, Found)
    assert len(reduced.boxes) == len(full.boxes)
    for ours, theirs in zip(reduced.boxes, full.boxes, strict=True):
        # Decoded at 1/2, searched on the same 1/4 copy: the boxes agree to a few reduced pixels.
        assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= 16
    assert max(box[2] for box in reduced.boxes) > 1536
