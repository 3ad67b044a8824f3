"""The cluster configs in cluster/ parse, carry what their tools require, and name real entrypoints."""

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def entrypoint_file(command: str) -> Path:
    script = next(arg for arg in shlex.split(command) if arg.endswith(".py"))
    return ROOT / script.removeprefix("/app/")  # the image copies the repository to /app


def test_cluster_launcher_config_has_a_head_and_an_autoscaling_gpu_group():
    config = load("gpu-cluster.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in config, key
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu and all(t["max_workers"] > t["min_workers"] for t in gpu)
    assert any("freeal_ray" in c for c in config["setup_commands"])
    assert all(Path(local).resolve() == ROOT.resolve() or (ROOT / local).exists() for local in config["file_mounts"].values())


def _check_cluster_spec(spec):
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and "resources" in head
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"]
    assert spec["enableInTreeAutoscaling"] is True


def test_kuberay_raycluster_manifest():
    manifest = load("kuberay/raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_cluster_spec(manifest["spec"])


def test_kuberay_rayjob_manifest_runs_the_job_entrypoint():
    manifest = load("kuberay/rayjob.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert entrypoint_file(spec["entrypoint"]).is_file()
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]["HF_HUB_OFFLINE"] == "1"
    _check_cluster_spec(spec["rayClusterSpec"])
    volumes = {v["name"] for v in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    assert {"runs", "config"} <= volumes  # run folders on shared storage, so a retried job resumes


def test_dockerfile_copies_what_the_entrypoint_needs():
    lines = (ROOT / "cluster" / "Dockerfile").read_text().splitlines()
    copied = " ".join(line for line in lines if line.startswith("COPY"))
    for needed in ("freeal_ray", "jobs", "pyproject.toml"):
        assert needed in copied and (ROOT / needed).exists()
    assert any(line.startswith("RUN pip install") and "[gpu]" in line for line in lines)


def test_job_runtime_env_is_valid():
    env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    assert set(env) <= {"pip", "env_vars", "working_dir", "py_modules", "conda", "excludes"}
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
