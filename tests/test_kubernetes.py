"""deploy/kubernetes: every manifest validates offline against Kubernetes' own schemas (kubernetes-validate ships
them), and says what the issue asks: GPU, probes on the service's routes, non-root, read-only root, model volume."""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"


def _documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [doc for doc in _documents() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    return doc


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_manifest_validates_strictly_offline(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        # An operator's custom resource is checked against that operator's CRD (test_custom_resource_...).
        if not _is_custom(doc):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(_one("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_on_a_gpu_with_probes_non_root_and_the_model_from_a_volume() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item["value"] for item in container["env"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert env["MODEL_REPOSITORY"].startswith("/models/")
    assert mounts["/models"]["readOnly"] is True
    assert "/tmp" in mounts


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _one("Service")["spec"]["selector"].items() <= labels.items()
    assert _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_the_indexed_job_shards_age_demo_over_its_completions() -> None:
    job = _one("Job", "age-demo")["spec"]
    assert job["completionMode"] == "Indexed"
    args = job["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "age-demo"
    assert int(args[args.index("--shard") + 1]) == job["completions"] == job["parallelism"]


def test_models_roll_out_through_the_repository_volume_or_a_surge_of_new_pods() -> None:
    """The rollout pattern of docs/deployment.md: the publish Job writes a version into the volume the pods read
    their MODEL_REPOSITORY from (they poll it); a new image rolls out one ready pod at a time, never fewer."""
    deployment = _one("Deployment")["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert float(env["MODEL_POLL_SECONDS"]) > 0
    served_claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    (serve_mount,) = [m for m in container["volumeMounts"] if env["MODEL_REPOSITORY"].startswith(m["mountPath"] + "/")]
    assert serve_mount["readOnly"] is True

    publish = _one("Job", "age-publish-model")["spec"]["template"]["spec"]
    (publisher,) = publish["containers"]
    publish_env = {item["name"]: item["value"] for item in publisher["env"]}
    publish_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in publish["volumes"]}
    (publish_mount,) = publisher["volumeMounts"]
    assert not publish_mount.get("readOnly", False)
    assert publish_claims[publish_mount["name"]] == served_claims[serve_mount["name"]]
    # Both see the same folder of versions: the pods' path below their mount is the Job's below its own.
    below = env["MODEL_REPOSITORY"].removeprefix(serve_mount["mountPath"])
    assert publish_env["REPOSITORY"] == publish_mount["mountPath"] + below
    script = publisher["args"][0]
    assert 'mv "$staging" "$REPOSITORY/$MODEL_VERSION"' in script, "a version appears in one rename"
    assert _one("PersistentVolumeClaim", "age-models")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_publish_script_adds_a_version_in_one_rename_and_never_overwrites(tmp_path: Path) -> None:
    """The Job's shell script, run here with the project's Python: a checked copy renamed into place."""
    (publisher,) = _one("Job", "age-publish-model")["spec"]["template"]["spec"]["containers"]
    repository = tmp_path / "age"
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "MODEL_SOURCE": str(ROOT / "models" / "default.h5"),
        "REPOSITORY": str(repository),
    }

    def publish(version: str) -> subprocess.CompletedProcess[str]:
        command = [*publisher["command"], publisher["args"][0]]
        return subprocess.run(command, env={**env, "MODEL_VERSION": version}, capture_output=True, text=True)

    assert publish("2").returncode == 0
    assert sorted(path.name for path in repository.iterdir()) == ["2"]
    assert (repository / "2" / "model.h5").read_bytes() == (ROOT / "models" / "default.h5").read_bytes()
    again = publish("2")
    assert again.returncode == 1
    assert "never overwritten" in again.stderr
    assert publish("latest").returncode == 1
    env["MODEL_SOURCE"] = str(ROOT / "README.md")
    assert publish("3").returncode != 0, "a file that is not a model is not published"
    assert sorted(path.name for path in repository.iterdir() if not path.name.startswith(".")) == ["2"]


# Custom resources (KubeRay's RayJob, Kubeflow's TFJob): validated against the operators' own CRDs in
# ../shared/schemas/crds, strictly (unknown fields refused, as the API server's strict field validation does).
CRDS = ROOT.parent / "shared" / "schemas" / "crds"
OPERATOR_GROUPS = ("ray.io", "kubeflow.org", "trainer.kubeflow.org")


def _is_custom(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] in OPERATOR_GROUPS


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``additionalProperties: false`` wherever it names properties and keeps no unknown fields."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(child) for name, child in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict(child) for child in out[key]]
    return out


def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    if not CRDS.is_dir():
        pytest.skip(f"the operators' CRD schemas are not at {CRDS} (../shared absent)")
    return _load_crd_validator(api_version, kind)


@functools.cache
def _load_crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    group, version = api_version.split("/")
    # The CRD files are named <group>_<plural>.yaml, as the operators' repositories name them; libyaml's loader
    # parses the 1.4 MB RayJob schema in a second where the pure-Python one takes twenty.
    crd = yaml.load((CRDS / f"{group}_{kind.lower()}s.yaml").read_text(), Loader=yaml.CSafeLoader)
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    return jsonschema.Draft7Validator(_strict(served["schema"]["openAPIV3Schema"]))


CUSTOM = [doc for doc in _documents() if _is_custom(doc)]


@pytest.mark.parametrize("doc", CUSTOM, ids=[f"{doc['kind']}-{doc['metadata']['name']}" for doc in CUSTOM])
def test_custom_resource_validates_against_its_operators_crd(doc: dict[str, Any]) -> None:
    _crd_validator(doc["apiVersion"], doc["kind"]).validate(doc)


def test_the_crd_validator_catches_a_misspelt_field_and_a_wrong_type() -> None:
    job = _one("RayJob")
    validator = _crd_validator(job["apiVersion"], job["kind"])
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        validator.validate(misspelt)
    wrong = copy.deepcopy(job)
    wrong["spec"]["backoffLimit"] = "twice"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(wrong)


def _claims(pod: dict[str, Any]) -> set[str]:
    return {
        volume["persistentVolumeClaim"]["claimName"] for volume in pod["volumes"] if "persistentVolumeClaim" in volume
    }


def test_the_rayjob_runs_age_batch_over_an_object_store_prefix_on_cpu_and_gpu_workers() -> None:
    spec = _one("RayJob", "age-batch")["spec"]
    command = spec["entrypoint"].split()
    assert command[:2] == ["age-batch", "s3://age-archive/photos/"]
    assert command[2].startswith("s3://")
    assert command[command.index("--address") + 1] == "auto"
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "the head only hosts the driver"
    gpus = {
        group["groupName"]: group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        for group in cluster["workerGroupSpecs"]
    }
    assert gpus == {"cpu": None, "gpu": 1}
    pinned = re.search(r'"ray\[data\]==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    assert cluster["rayVersion"] == pinned.group(1), "the cluster runs the Ray that age-batch pins"


def test_the_tfjob_trains_on_two_workers_and_the_chief_alone_writes_the_model() -> None:
    spec = _one("TFJob", "age-train")["spec"]
    assert set(spec["tfReplicaSpecs"]) == {"Worker"}, "worker 0 is the chief (trainer.training.distribute)"
    worker = spec["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"
    assert container["image"].startswith("age-estimation-train:")
    assert {"name": "tfjob-port", "containerPort": 2222} in container["ports"]
    assert "TF_CONFIG" not in {entry["name"] for entry in container.get("env", [])}, "the operator sets it"
    settings = dict(arg.split("=", 1) for arg in container["args"] if "=" in arg)
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert settings["output_dir"].startswith("/models/")
    assert not mounts["/models"].get("readOnly")
    assert settings["img_dir"].startswith("/data/")
    assert mounts["/data"]["readOnly"]
    defined = {doc["metadata"]["name"] for doc in _documents() if doc["kind"] == "PersistentVolumeClaim"}
    assert _claims(pod) <= defined
