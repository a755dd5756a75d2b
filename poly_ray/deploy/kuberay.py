"""A KubeRay ``RayService`` manifest around a Serve config (``app.serve_config``).

The RayCluster in it mirrors cluster.yaml: a head that runs no model replicas
(it advertises no CPU; the ingress, orchestrator and memory actor run there, as
they ask for none), a CPU worker group and a GPU worker group that KubeRay's
autoscaler grows and shrinks as Serve asks for replicas.
"""

from __future__ import annotations

import yaml

IMAGE = "poly-ray:0.1.0"  # built as docs/operations/deployment.md (On Kubernetes) says
# API keys, the JWT secret and Ray's own token reach the pods from this Secret, never the manifest.
SECRET = "poly-ray-keys"
_FROM_SECRET = [("POLY_ALLOWED_KEYS", "allowed_keys"), ("POLY_JWT_PRIVATE_KEY", "jwt_private_key")]
# Ray's token authentication (every node, the dashboard and the job API ask for it):
# on, with the token from the Secret's ray_auth_token; without that key no pod starts.
RAY_TOKEN_KEY = "ray_auth_token"

HEADER = """\
# Written by `poly-ray build --kuberay` (make deployments); a test keeps it in sync.
# kubectl apply -f this file, with the KubeRay operator installed. The image must
# hold poly-ray, llama-cpp-python (built with CUDA for the GPU group) and the
# models: see docs/operations/deployment.md, "On Kubernetes (KubeRay)".
"""


class _Literal(str):
    """A string that YAML writes as a block (``|``), as KubeRay's examples do."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|"))


def _container(name: str, cpu: str, memory: str, gpus: int = 0) -> dict:
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": gpus} if gpus else {})}
    return {
        "name": name,
        "image": IMAGE,
        "resources": {"limits": limits, "requests": dict(limits)},
        # Ray's worker processes (the ingress among them) inherit the pod's environment.
        "env": [
            {"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": RAY_TOKEN_KEY}}},
            *({"name": env, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key, "optional": True}}}
              for env, key in _FROM_SECRET),
        ],
    }


def _worker_group(name: str, container: dict, max_replicas: int) -> dict:
    return {
        "groupName": name,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": max_replicas,
        "rayStartParams": {},
        "template": {"spec": {"containers": [container]}},
    }


def rayservice(serve_config: dict, ray_version: str, name: str = "poly-ray") -> str:
    """The manifest's text: ``serve_config`` as its serveConfigV2, with the proxies
    listening on the pods' addresses (0.0.0.0) so that KubeRay's Service reaches them."""
    serve = {**serve_config, "http_options": {**serve_config["http_options"], "host": "0.0.0.0"}}
    head = _container("ray-head", "2", "8Gi")
    # The dashboard runs code on every node: it listens on the pod's loopback only
    # (kubectl port-forward reaches it), and asks for the Ray token.
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": serve["http_options"]["port"], "name": "serve"},
    ]
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": _Literal(yaml.safe_dump(serve, sort_keys=False)),
            "rayClusterConfig": {
                "rayVersion": ray_version,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"idleTimeoutSeconds": 600},
                "headGroupSpec": {
                    # No CPU for the scheduler: model replicas go to the workers.
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "127.0.0.1"},
                    "template": {"spec": {"containers": [head]}},
                },
                "workerGroupSpecs": [
                    _worker_group("cpu", _container("ray-worker", "8", "16Gi"), 4),
                    _worker_group("gpu", _container("ray-worker", "8", "32Gi", gpus=1), 4),
                ],
            },
        },
    }
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False)
