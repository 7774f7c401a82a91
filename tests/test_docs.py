"""The reference in docs/ covers what users can set: every key ``age-train`` accepts, every environment setting and
predict-config key of ``age-serve``; README.md stays a front page whose links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from service.settings import PredictConfig, ServiceSettings
from trainer.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 200
# [text](target) with a relative target: a file of the repository, maybe with an #anchor.
LOCAL_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s#]+)(?:#[^)]*)?\)")


def _docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


def _names(model: type[BaseModel], transform: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.append(alias or (name.upper() if transform == "upper" else name))
    return names


def _undocumented(names: list[str]) -> list[str]:
    text = _docs_text()
    return [name for name in names if f"`{name}`" not in text]


def test_docs_has_the_reference_pages():
    assert {"training.md", "serving.md", "deployment.md", "benchmarks.md"} <= {p.name for p in DOCS.glob("*.md")}


def test_every_training_key_is_documented():
    assert _undocumented(_names(TrainConfig)) == [], "age-train keys missing from docs/ (write them as `key`)"


def test_every_environment_setting_is_documented():
    missing = _undocumented(_names(ServiceSettings, "upper"))
    assert missing == [], "age-serve environment settings missing from docs/ (write them as `NAME`)"


def test_every_predict_config_key_is_documented():
    assert _undocumented(_names(PredictConfig)) == []


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))])
def test_local_links_resolve(page: str):
    source = ROOT / page
    targets = LOCAL_LINK.findall(source.read_text())
    assert [t for t in targets if not (source.parent / t).exists()] == []
