"""The deployment files validate with Ray's own tooling."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_passes_the_autoscaler_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    types = cfg["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}  # the head runs no replicas
    assert {"cpu_worker", "gpu_worker"} <= set(types)


def test_cluster_yaml_errors_are_caught_by_the_same_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cfg["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        validate_config(prepare_config(cfg))


def test_serve_config_validates_against_serves_schema():
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load((REPO / "deployments" / "serve.yaml").read_text()))


def test_rayservice_manifest_is_what_poly_ray_build_writes_for_the_example():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "poly_ray.cli", "build", "--kuberay"], check=True, capture_output=True, text=True)
    assert (REPO / "deployments" / "rayservice.yaml").read_text() == r.stdout, "run: make deployments"


def test_rayservice_serves_the_serve_config_on_the_pods_addresses():
    from ray.serve.schema import ServeDeploySchema

    manifest = yaml.safe_load((REPO / "deployments" / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    expected = yaml.safe_load((REPO / "deployments" / "serve.yaml").read_text())
    expected["http_options"]["host"] = "0.0.0.0"  # a pod listens on its own address
    assert served == expected
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head runs no model replicas
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1 and "nvidia.com/gpu" not in str(groups["cpu"])
