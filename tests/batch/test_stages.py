"""batch.stages without Ray: the alignment stage's records and chips, and an error row with the service's code for
every way a photo can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batch.model import DEFAULT_MODEL
from batch.stages import AlignStage, error_code
from core.artifact import read_metadata
from core.errors import ImageTooComplexError, NoFaceError, UnreadableImageError


@pytest.fixture(scope="module")
def stage() -> AlignStage:
    return AlignStage(read_metadata(DEFAULT_MODEL))


def test_error_codes_are_the_services_plus_unreadable_files() -> None:
    assert error_code(NoFaceError("x")) == "no_face"
    assert error_code(UnreadableImageError("x")) == "corrupt_image"
    assert error_code(ImageTooComplexError("x")) == "image_too_complex"
    assert error_code(PermissionError("x")) == "unreadable_file"
    assert error_code(ValueError("x")) == "internal_error"


def test_a_chunk_gives_one_record_per_face_and_the_chips_in_their_order(
    stage: AlignStage, fixtures_dir: Path, tmp_path: Path
) -> None:
    group, single = fixtures_dir / "2008_002506.jpg", fixtures_dir / "astronaut.png"
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths = [str(group), str(tmp_path / "missing.jpg"), str(single), str(tmp_path), str(tmp_path / "empty.jpg")]
    out = stage({"part": np.array(["part-x"]), "paths": [np.array(paths, dtype=object)]})
    records = json.loads(out["records"][0])
    assert [(record["path"], record.get("face")) for record in records] == [
        (str(group), 0),
        (str(group), 1),
        (str(group), 2),
        (str(tmp_path / "missing.jpg"), None),
        (str(single), 0),
        (str(tmp_path), None),
        (str(tmp_path / "empty.jpg"), None),
    ]
    assert [record["error"].split(":")[0] for record in records if "error" in record] == [
        "unreadable_file",
        "unreadable_file",
        "corrupt_image",
    ]
    chips = np.frombuffer(out["chips"][0], dtype=np.uint8).reshape(-1, 150, 150, 3)
    assert len(chips) == 4
    boxes = [record["box"] for record in records if "box" in record]
    assert all(left < right and top < bottom for left, top, right, bottom in boxes)
