"""The deployment files validate with Ray's own tooling."""

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def rayservice(text: str) -> dict:
    """The RayService of a manifest (the claim for the head's state is written before it)."""
    [service] = [d for d in yaml.safe_load_all(text) if d["kind"] == "RayService"]
    return service


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

    env = {**os.environ, "POLY_PUBLIC": "false"}
    r = subprocess.run([sys.executable, "-m", "poly_ray.cli", "build", "--kuberay"], check=True, capture_output=True,
                       text=True, env=env)
    assert (REPO / "deployments" / "rayservice.yaml").read_text() == r.stdout, "run: make deployments"


def test_build_kuberay_refuses_a_public_config_and_keeps_keys_out_of_the_manifest():
    import subprocess
    import sys

    build = [sys.executable, "-m", "poly_ray.cli", "build", "--kuberay"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLY_")}
    r = subprocess.run(build, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "the config is public" in r.stderr and "--allow-public" in r.stderr
    assert subprocess.run([*build, "--allow-public"], capture_output=True, env=env).returncode == 0
    r = subprocess.run(build, capture_output=True, text=True, check=True,
                       env={**env, "POLY_PUBLIC": "false", "POLY_ALLOWED_KEYS": "sk-very-secret",
                            "POLY_JWT_PRIVATE_KEY": "a-jwt-secret-that-is-long-enough-for-hs256"})
    assert "sk-very-secret" not in r.stdout and "POLY_ALLOWED_KEYS is not written into the Serve config" in r.stderr
    assert "a-jwt-secret" not in r.stdout and "POLY_JWT_PRIVATE_KEY is not written" in r.stderr
    manifest = rayservice(r.stdout)
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert 8265 not in [p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]]
    env_vars = head["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POLY_ALLOWED_KEYS",
            "valueFrom": {"secretKeyRef": {"name": "poly-ray-keys", "key": "allowed_keys", "optional": True}}} in env_vars


def test_rayservice_serves_the_serve_config_on_the_pods_addresses():
    from ray.serve.schema import ServeDeploySchema

    manifest = rayservice((REPO / "deployments" / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    expected = yaml.safe_load((REPO / "deployments" / "serve.yaml").read_text())
    expected["http_options"]["host"] = "0.0.0.0"  # a pod listens on its own address
    expected["applications"][0]["runtime_env"] = {"env_vars": {"POLY_PUBLIC": "false"}}  # never public in the cluster
    assert served == expected
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head runs no model replicas
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1 and "nvidia.com/gpu" not in str(groups["cpu"])


def test_ray_token_auth_is_on_everywhere_the_shipped_deployments_start_ray():
    """cluster.yaml and the KubeRay pods start Ray with RAY_AUTH_MODE=token, the token from a
    file every node gets or from the Secret, never in the files; dashboards on loopback."""
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    assert "disabled" not in (REPO / "cluster.yaml").read_text()
    assert "--dashboard-host=127.0.0.1" in starts[0]
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    deploy = [c for c in cfg["head_start_ray_commands"] if "serve deploy" in c]
    assert deploy and "RAY_AUTH_MODE=token serve deploy" in deploy[0]

    manifest = rayservice((REPO / "deployments" / "rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        [container] = pod["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "poly-ray-keys", "key": "ray_auth_token"}}
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_the_heads_durable_state_is_on_a_claim_and_every_pod_runs_unprivileged():
    """N12: state_dir and the embedded memory store outlive the head pod; N20: no root, no
    privilege escalation (Ray's images give their user sudo), no capabilities, and no
    Kubernetes API token on the workers (the head's autoscaler needs its own)."""
    docs = list(yaml.safe_load_all((REPO / "deployments" / "rayservice.yaml").read_text()))
    [claim] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    cluster = rayservice((REPO / "deployments" / "rayservice.yaml").read_text())["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["volumes"] == [{"name": "state", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]
    mounts = {m["mountPath"]: m["subPath"] for m in head["containers"][0]["volumeMounts"]}
    # The example config's state_dir (the default) and its embedded store, as the pod's user sees them.
    assert set(mounts) == {"/home/ray/.local/share/poly-ray", "/home/ray/.cache/poly-ray/memories/docs"}
    assert len(set(mounts.values())) == 2
    for pod in [head, *(g["template"]["spec"] for g in cluster["workerGroupSpecs"])]:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 100
        assert pod["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert all(g["template"]["spec"]["automountServiceAccountToken"] is False for g in cluster["workerGroupSpecs"])
