"""Deployment files agree with each other and with the code: KubeRay manifests, Dockerfile, `ray up` configs.

Nothing here needs Kubernetes or Docker; what can be checked without them is checked.
"""

import json
import re
import shlex
import sys
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from jobs.config import JobConfig
from jobs.score_corpus import build_parser
from rmcluster.config_cli import config_from_args
from serve.config_check import config_problems

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
RAY_KINDS = {"RayService", "RayJob", "RayCluster"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Field names of the KubeRay ray.io/v1 API types (ray-operator/apis/ray/v1/*_types.go) for the parts
# these manifests use. Pod templates are core Kubernetes and are not checked here.
RAY_CLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                    "autoscalerOptions", "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions",
                    "managedBy", "upgradeStrategy"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template", "resources", "labels"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
                "scaleStrategy", "idleTimeoutSeconds", "suspend", "resources", "labels"}
AUTOSCALER = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
              "idleTimeoutSeconds", "upscalingMode", "version"}
RAY_JOB_SPEC = {"entrypoint", "metadata", "runtimeEnvYAML", "jobId", "shutdownAfterJobFinishes",
                "ttlSecondsAfterFinished", "activeDeadlineSeconds", "rayClusterSpec", "clusterSelector", "suspend",
                "submissionMode", "submitterPodTemplate", "submitterConfig", "entrypointNumCpus",
                "entrypointNumGpus", "entrypointResources", "backoffLimit", "deletionStrategy", "managedBy"}
RAY_SERVICE_SPEC = {"serveConfigV2", "rayClusterConfig", "upgradeStrategy", "serviceUnhealthySecondThreshold",
                    "deploymentUnhealthySecondThreshold", "serveService", "excludeHeadPodFromServeSvc",
                    "rayClusterDeletionDelaySeconds"}


def _docs():
    return [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _ray_docs():
    return [(name, doc) for name, doc in _docs() if doc["kind"] in RAY_KINDS]


def _cluster_spec(doc):
    return {"RayService": lambda s: s["rayClusterConfig"], "RayJob": lambda s: s["rayClusterSpec"],
            "RayCluster": lambda s: s}[doc["kind"]](doc["spec"])


def _containers(spec):
    groups = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _pinned_ray_version() -> str:
    (pin,) = [d for d in PYPROJECT["project"]["optional-dependencies"]["serve"] if d.startswith("ray[")]
    return pin.split("==")[1]


def test_every_manifest_parses_and_ray_kinds_use_v1():
    kinds = {doc["kind"] for _, doc in _docs()}
    assert RAY_KINDS <= kinds and {"PodMonitor", "PersistentVolumeClaim"} <= kinds
    for name, doc in _ray_docs():
        assert doc["apiVersion"] == "ray.io/v1", name


def _unknown(mapping: dict, allowed: set, where: str) -> list[str]:
    return [f"{where}.{k}" for k in mapping if k not in allowed]


def test_kuberay_fields_are_known():
    bad = []
    for name, doc in _ray_docs():
        spec_fields = {"RayService": RAY_SERVICE_SPEC, "RayJob": RAY_JOB_SPEC, "RayCluster": RAY_CLUSTER_SPEC}
        bad += _unknown(doc["spec"], spec_fields[doc["kind"]], f"{name}:spec")
        cluster = _cluster_spec(doc)
        bad += _unknown(cluster, RAY_CLUSTER_SPEC, f"{name}:cluster")
        bad += _unknown(cluster.get("autoscalerOptions", {}), AUTOSCALER, f"{name}:autoscalerOptions")
        bad += _unknown(cluster["headGroupSpec"], HEAD_GROUP, f"{name}:headGroupSpec")
        for group in cluster["workerGroupSpecs"]:
            bad += _unknown(group, WORKER_GROUP, f"{name}:workerGroupSpecs")
    assert not bad


def test_rayservice_carries_the_production_serve_config_verbatim_and_it_validates_strictly():
    sys.path.insert(0, str(K8S))
    import render

    assert render.main(["--check"]) == 0, "run: python k8s/render.py"
    (rayservice,) = [doc for _, doc in _ray_docs() if doc["kind"] == "RayService"]
    embedded = rayservice["spec"]["serveConfigV2"]
    assert embedded == render.SERVE_CONFIG.read_text()
    assert config_problems(yaml.safe_load(embedded)) == []
    # The check can fail: a drifted copy is caught.
    assert render.render(render.RAYSERVICE.read_text(), "applications: []\n") != render.RAYSERVICE.read_text()


def test_ray_versions_agree_everywhere():
    pinned = _pinned_ray_version()
    assert ray.__version__ == pinned
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1) == pinned
    assert "FROM rayproject/ray:${RAY_VERSION}-" in dockerfile
    for name, doc in _ray_docs():
        assert _cluster_spec(doc)["rayVersion"] == pinned, name
    for path in (REPO / "cluster").glob("*.yaml"):
        image = yaml.safe_load(path.read_text())["docker"]["image"]
        assert image.startswith(f"rayproject/ray:{pinned}-"), path.name


def test_images_are_this_project_at_its_version():
    version = PYPROJECT["project"]["version"]
    images = {c["image"] for _, doc in _ray_docs() for c in _containers(_cluster_spec(doc))}
    assert images == {f"rmcluster:{version}"}


def test_dockerfile_installs_serve_and_flash_attn_where_it_builds_and_copies_what_the_manifests_run():
    dockerfile = (K8S / "Dockerfile").read_text()
    # A flash-attn build that fails (no wheel, no nvcc) must not fail the image: rmcluster falls back to sdpa.
    assert '".[serve]"' in dockerfile and '|| echo "flash-attn not installed' in dockerfile
    for config in ("aws-gpu.yaml", "gcp-gpu.yaml"):
        assert '|| echo "flash-attn not installed' in (REPO / "cluster" / config).read_text()
    copied = re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", dockerfile, re.M)
    sources = [s for line in copied for s in line.split()]
    assert {"rmcluster", "serve", "jobs", "serve.config.yaml", "pyproject.toml"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source


def test_clusters_schedule_nothing_on_the_head_and_autoscale_gpu_workers():
    for name, doc in _ray_docs():
        spec = _cluster_spec(doc)
        assert spec["enableInTreeAutoscaling"] is True, name
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", name
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], name
            resources = group["template"]["spec"]["containers"][0]["resources"]
            assert resources["limits"]["nvidia.com/gpu"] == 1, name


def test_secrets_come_from_secret_refs_never_inline():
    for name, doc in _ray_docs():
        for container in _containers(_cluster_spec(doc)):
            for env in container.get("env", []):
                if re.search(r"TOKEN|SECRET|KEY", env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (name, env["name"])
        assert "hf_" not in yaml.safe_dump(doc)


def test_weights_come_from_the_shared_hf_cache_volume():
    dockerfile = (K8S / "Dockerfile").read_text()
    hf_home = re.search(r"HF_HOME=(\S+)", dockerfile).group(1)
    claims = {doc["metadata"]["name"] for _, doc in _docs() if doc["kind"] == "PersistentVolumeClaim"}
    for name, doc in _ray_docs():
        spec = _cluster_spec(doc)
        for container in _containers(spec):
            assert hf_home in {m["mountPath"] for m in container["volumeMounts"]}, name
        groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
        for group in groups:
            volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
            assert volumes["hf-cache"]["persistentVolumeClaim"]["claimName"] in claims, name


def test_prometheus_scrapes_the_metrics_port_of_every_ray_pod():
    (monitor,) = [doc for _, doc in _docs() if doc["kind"] == "PodMonitor"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    for name, doc in _ray_docs():
        spec = _cluster_spec(doc)
        groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
        for group in groups:
            assert group["rayStartParams"]["metrics-export-port"] == "8080", name
            ports = {p["name"]: p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"]}
            assert ports[port] == 8080, name


def test_rayjob_entrypoint_names_the_job_module_and_its_flags_validate():
    (rayjob,) = [doc for _, doc in _ray_docs() if doc["kind"] == "RayJob"]
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.score_corpus"]
    assert find_spec(argv[2]) is not None
    config = config_from_args(build_parser().parse_args(argv[3:]), JobConfig)
    assert config.output.startswith(("s3://", "gs://")), "results go to object storage"
    assert config.scorer.num_gpus == 1
    yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])


@pytest.mark.parametrize("path", sorted((REPO / "cluster").glob("*.yaml")), ids=lambda p: p.name)
def test_ray_up_configs_validate_against_rays_schema(path):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, schema)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert any("--num-cpus=0" in cmd for cmd in config["head_start_ray_commands"])
    config["idle_timeout_minute"] = 1  # a typo must be caught
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_the_api_keys_secret_is_mounted_where_the_serve_config_reads_it_on_every_pod():
    (rayservice,) = [doc for _, doc in _ray_docs() if doc["kind"] == "RayService"]
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    key_file = Path(app["args"]["ingress"]["api_keys"]["file"])
    spec = rayservice["spec"]["rayClusterConfig"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:  # the ingress may run on any pod
        pod = group["template"]["spec"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert secrets.get(mounts.get(str(key_file.parent))) == "rmcluster-api-keys", group.get("groupName", "head")


def test_serving_clusters_start_ray_in_serves_high_throughput_mode():
    """HAProxy and gRPC between deployments (read when Ray starts): on every RayService pod, every VM node's
    `ray start`, and in `make demo`, with the variables serve.demo names."""
    from serve.demo import HIGH_THROUGHPUT_ENV

    (rayservice,) = [doc for _, doc in _ray_docs() if doc["kind"] == "RayService"]
    for container in _containers(_cluster_spec(rayservice)):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert {k: env.get(k) for k in HIGH_THROUGHPUT_ENV} == HIGH_THROUGHPUT_ENV, container["name"]
    prefix = " ".join(f"{k}={v}" for k, v in HIGH_THROUGHPUT_ENV.items()) + " ray start"
    for path in (REPO / "cluster").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        for key in ("head_start_ray_commands", "worker_start_ray_commands"):
            starts = [c for c in config[key] if "ray start" in c]
            assert starts and all(prefix in c for c in starts), (path.name, key)
