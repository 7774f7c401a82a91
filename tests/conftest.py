"""Shared fixtures: where the committed fixtures and the shared data sets live.

``../shared`` (relative to the repository root) holds data that is never committed: ``data/utkface`` (18,983
labelled 200x200 UTKFace chips with ``labels.csv``) and ``data/faces`` (dlib's example photos with hand-drawn face
boxes in imglab XML). Tests that need them skip, with the reason, when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _required(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures``: small public-domain and Boost-licensed photos committed with the code."""
    return REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the repository; skips when absent."""
    return _required(REPO_ROOT.parent / "shared", "the shared data folder")


@pytest.fixture(scope="session")
def utkface_dir(shared_dir: Path) -> Path:
    """``../shared/data/utkface`` (``labels.csv`` + ``images/``); skips when absent."""
    return _required(shared_dir / "data" / "utkface" / "labels.csv", "UTKFace labels").parent


@pytest.fixture(scope="session")
def faces_dir(shared_dir: Path) -> Path:
    """``../shared/data/faces`` (dlib's example photos, hand boxes in ``training.xml``, ``testing.xml``); may skip."""
    return _required(shared_dir / "data" / "faces" / "testing.xml", "dlib's example face photos").parent


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The ONNX files the engine converts the tests' models into go to a session folder, not the user's
    ~/.cache (servers the tests start inherit the variable)."""
    import os

    os.environ.setdefault("MODEL_CACHE_DIR", str(tmp_path_factory.mktemp("onnx-cache")))
