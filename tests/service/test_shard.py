"""age-demo --shard I/N: a deterministic split by file name; N shards write exactly the files of one run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.demo import main
from service.shard import parse_shard, select, shard_of
from tests.service.conftest import photo_path


@given(st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=40), st.integers(1, 9))
def test_shards_partition_any_listing(names: list[str], count: int) -> None:
    files = [Path(name) for name in names]
    shards = [select(files, index, count) for index in range(count)]
    assert sorted(path for shard in shards for path in shard) == sorted(files)
    assert all(shard_of(path.name, count) == index for index, shard in enumerate(shards) for path in shard)


def test_parse_shard_reads_i_of_n_or_the_job_completion_index() -> None:
    assert parse_shard("2/4", {}) == (2, 4)
    assert parse_shard("4", {"JOB_COMPLETION_INDEX": "3"}) == (3, 4)
    for bad in ("4/4", "-1/3", "a/b", "0/0", "4"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad, {})


def test_four_shards_write_the_files_of_one_run(tmp_path: Path, config_file: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(["astronaut.png", "2008_001009.jpg", "2008_002506.jpg"] * 3):
        shutil.copy(photo_path(name), photos / f"{i:02d}_{name}")
    (photos / "notes.txt").write_text("not a photo")
    # One photo per model call in both runs: which photos share a call changes the logits' last bits, not the ages.
    common = ["-p", str(photos), "--config", str(config_file), "--batch-size", "1"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    for index in range(4):
        # A shard may hold only unusable files, which is exit status 1 and no output; any other failure is not.
        assert main([*common, "--out", str(tmp_path / "shards"), "--shard", f"{index}/4"]) in (0, 1)
    whole = {path.name: path.read_bytes() for path in (tmp_path / "whole").iterdir()}
    sharded = {path.name: path.read_bytes() for path in (tmp_path / "shards").iterdir()}
    assert len(whole) == 9
    assert sharded == whole
