"""batch.output: parts named by their photos, committed whole, read back by a rerun, one model per dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from batch.output import SCHEMA, TEMPORARY, chunks, clear_temporary, committed, part_name, table, write_part
from core.errors import ConfigError

FIXED = {"model_id": "default@sha256:0123456789ab", "coverage": 0.9, "calibrated": True}


def rows(paths: list[str], model_id: str = FIXED["model_id"]):  # type: ignore[no-untyped-def]
    records = [{"path": paths[0], "face": 0, "box": [1, 2, 3, 4]}, {"path": paths[0], "face": 1, "box": [5, 6, 7, 8]}]
    records += [{"path": path, "error": "no_face: no face found in the image"} for path in paths[1:]]
    logits = np.array([[3.0, -1.0], [2.0, 1.0]], dtype=np.float32)
    ages = np.array([[2, 1, 3], [3, 2, 3]])
    return table(records, logits, ages, {**FIXED, "model_id": model_id})


def test_part_names_depend_on_the_photos_only() -> None:
    assert part_name(["a", "b"]) == part_name(["a", "b"]) != part_name(["a", "c"])
    cut = chunks(["c", "a", "e", "b", "d"], 2)
    assert [chunk["paths"] for chunk in cut] == [["a", "b"], ["c", "d"], ["e"]]
    assert cut[0]["part"] == part_name(["a", "b"])


def test_a_chunk_is_one_row_per_face_and_one_error_row_per_unscored_photo() -> None:
    written = rows(["/p/one.jpg", "/p/two.jpg"])
    assert written.schema == SCHEMA
    data = written.to_pylist()
    assert [(row["path"], row["face"]) for row in data] == [("/p/one.jpg", 0), ("/p/one.jpg", 1), ("/p/two.jpg", None)]
    assert data[1]["result_value"] == 3
    assert data[1]["age_interval"] == [2, 3]
    assert data[1]["box"] == [5, 6, 7, 8]
    assert data[0]["raw_logits"] == [3.0, -1.0]
    assert data[0]["coverage"] == 0.9
    assert data[0]["calibrated"] is True
    error = data[2]
    assert error["error"].startswith("no_face:")
    assert error["model_id"] == FIXED["model_id"]
    assert error["result_value"] is None
    assert error["box"] is None
    assert error["raw_logits"] is None


def test_committed_parts_are_read_back_and_half_written_ones_are_not(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    assert committed(output, FIXED["model_id"]) == set()
    write_part(output, part_name(["/p/a.jpg", "/p/b.jpg"]), rows(["/p/a.jpg", "/p/b.jpg"]))
    (tmp_path / "out" / TEMPORARY / "part-0123.parquet.abc").write_bytes(b"PAR1 half")
    assert committed(output, FIXED["model_id"]) == {"/p/a.jpg", "/p/b.jpg"}
    assert len(pq.read_table(output)) == 3
    clear_temporary(output)
    assert not (tmp_path / "out" / TEMPORARY).exists()


def test_rewriting_a_part_replaces_it(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    name = part_name(["/p/a.jpg", "/p/b.jpg"])
    write_part(output, name, rows(["/p/a.jpg", "/p/b.jpg"]))
    write_part(output, name, rows(["/p/a.jpg", "/p/b.jpg"]))
    assert len(pq.read_table(output)) == 3


def test_a_dataset_of_another_model_is_refused(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    write_part(output, part_name(["/p/a.jpg"]), rows(["/p/a.jpg"], model_id="old@sha256:ffffffffffff"))
    with pytest.raises(ConfigError, match="old@sha256:ffffffffffff"):
        committed(output, FIXED["model_id"])


def test_on_an_object_store_a_part_is_one_upload_and_reads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An object store has no atomic rename, but a single upload appears whole: parts go straight to their name."""
    import batch.output

    store = pafs._MockFileSystem()
    monkeypatch.setattr(batch.output, "_folder", lambda output: (store, "bucket/ages"))
    write_part("s3://bucket/ages", part_name(["s3://bucket/p/a.jpg"]), rows(["s3://bucket/p/a.jpg"]))
    assert committed("s3://bucket/ages", FIXED["model_id"]) == {"s3://bucket/p/a.jpg"}
    assert store.get_file_info(f"bucket/ages/{TEMPORARY}").type == pafs.FileType.NotFound
