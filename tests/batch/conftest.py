"""Fixtures for ``age-batch``: one local Ray instance with 2 CPUs for the whole session, and a folder of real
photos (UTKFace held-out photos and dlib's example photos from ``../shared/data``) with bad files among them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("ray", reason="age-batch needs the batch extra: pip install -e '.[batch]'")

BAD_FILES = {
    "truncated.jpg": "corrupt_image",
    "notes/readme.jpg": "unsupported_image",
    "animation.gif": "unsupported_image",
    "dogs.jpg": "no_face",
}
"""Files of the photo folder that get an error row, and their code."""


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray instance with 2 CPUs, started once; its address, for a second driver (``--address``)."""
    import ray

    from batch.pipeline import start_local_ray

    start_local_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def holdout_photos(utkface_dir: Path, count: int) -> list[Path]:
    """The first ``count`` photos of the model's held-out list (``models/holdout.csv``, paths under UTKFace)."""
    rows = pd.read_csv(REPO_ROOT / "models" / "holdout.csv", nrows=count)
    return [utkface_dir / path for path in rows["Path"]]


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory, utkface_dir: Path, faces_dir: Path) -> Path:
    """12 held-out UTKFace photos, 2 of dlib's group photos (one in a sub-folder) and the :data:`BAD_FILES`: a
    truncated JPEG, a text file named ``.jpg``, a GIF, a photo of dogs; plus a sidecar file a folder run skips."""
    folder = tmp_path_factory.mktemp("photos")
    for path in holdout_photos(utkface_dir, 12):
        shutil.copy(path, folder / path.name)
    (folder / "group").mkdir()
    shutil.copy(faces_dir / "2008_002506.jpg", folder / "group" / "2008_002506.jpg")
    shutil.copy(faces_dir / "astronaut.png", folder / "astronaut.png")
    shutil.copy(faces_dir / "dogs.jpg", folder / "dogs.jpg")
    (folder / "truncated.jpg").write_bytes((faces_dir / "2008_001009.jpg").read_bytes()[:3000])
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.jpg").write_text("not a photo\n")
    (folder / "animation.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (folder / "labels.csv").write_text("ID,Path,Age\n")
    return folder
