"""batch.inputs: folders (recursive, photo suffixes only), globs, path lists and URIs name photos the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batch.inputs import Reader, list_photos, open_location


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("a.jpg", "b.PNG", "sub/c.jpeg", "sub/deep/d.webp", "sub/e.gif", "notes.txt", ".hidden.jpg"):
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    return tmp_path / "in"


def names(paths: list[str], root: Path) -> list[str]:
    return [os.path.relpath(path, root) for path in paths]


def test_a_folder_is_searched_recursively_for_photo_suffixes_only(tree: Path) -> None:
    found = list_photos(str(tree))
    assert names(found, tree) == ["a.jpg", "b.PNG", "sub/c.jpeg", "sub/deep/d.webp", "sub/e.gif"]
    assert all(os.path.isabs(path) for path in found)


def test_a_relative_folder_names_photos_by_their_absolute_path(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    assert list_photos("in") == list_photos(str(tree))


def test_a_glob_takes_what_it_matches_and_star_stays_in_one_folder(tree: Path) -> None:
    assert names(list_photos(f"{tree}/*.jpg"), tree) == ["a.jpg"]
    assert names(list_photos(f"{tree}/**/*.jp*g"), tree) == ["a.jpg", "sub/c.jpeg"]
    assert names(list_photos(f"{tree}/sub/*"), tree) == ["sub/c.jpeg", "sub/e.gif"]
    assert names(list_photos(f"{tree}/[!a]*.*"), tree) == ["b.PNG", "notes.txt"]
    assert list_photos(f"{tree}/missing/*.jpg") == []


def test_a_path_list_takes_every_entry_once_relative_to_its_folder(tree: Path) -> None:
    listing = tree / "list.txt"
    listing.write_text(f"# photos\na.jpg\n\nsub/c.jpeg\n{tree}/a.jpg\nmissing.jpg\nnotes.txt\n")
    assert names(list_photos(str(listing)), tree) == ["a.jpg", "missing.jpg", "notes.txt", "sub/c.jpeg"]


def test_a_file_uri_names_the_same_files_by_uri(tree: Path) -> None:
    found = list_photos(f"file://{tree}")
    assert found == [f"file://{path}" for path in list_photos(str(tree))]
    assert Reader().read(found[0]) == b"a.jpg"
    assert open_location(f"file://{tree}")[2] == "file://"


def test_nothing_there_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        list_photos(str(tmp_path / "no-such-folder"))


def test_the_reader_reads_local_files_and_raises_oserror_for_missing_ones(tree: Path) -> None:
    assert Reader().read(str(tree / "sub" / "c.jpeg")) == b"sub/c.jpeg"
    with pytest.raises(FileNotFoundError):
        Reader().read(str(tree / "gone.jpg"))
