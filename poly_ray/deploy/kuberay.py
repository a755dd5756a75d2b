"""A KubeRay ``RayService`` manifest around a Serve config (``app.serve_config``).

The RayCluster in it mirrors cluster.yaml: a head that runs no model replicas
(it advertises no CPU; the ingress, orchestrator and memory actor run there, as
they ask for none), a CPU worker group and a GPU worker group that KubeRay's
autoscaler grows and shrinks as Serve asks for replicas. The head keeps what must
outlive it (``state_dir``, the embedded memory stores) on a PersistentVolumeClaim
written beside the RayService; every pod runs as the image's unprivileged user.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import yaml

IMAGE = "poly-ray:0.1.0"  # built as docs/operations/deployment.md (On Kubernetes) says
# API keys, the JWT secret and Ray's own token reach the pods from this Secret, never the manifest.
SECRET = "poly-ray-keys"
_FROM_SECRET = [("POLY_ALLOWED_KEYS", "allowed_keys"), ("POLY_JWT_PRIVATE_KEY", "jwt_private_key")]
# Ray's token authentication (every node, the dashboard and the job API ask for it):
# on, with the token from the Secret's ray_auth_token; without that key no pod starts.
RAY_TOKEN_KEY = "ray_auth_token"
HOME = PurePosixPath("/home/ray")  # the image's user (uid 1000, group users: 100), its working directory
STATE_CLAIM = "poly-ray-state"
STATE_SIZE = "20Gi"

HEADER = """\
# Written by `poly-ray build --kuberay` (make deployments); a test keeps it in sync.
# kubectl apply -f this file, with the KubeRay operator installed. The image must
# hold poly-ray, llama-cpp-python (built with CUDA for the GPU group) and the
# models: see docs/operations/deployment.md, "On Kubernetes (KubeRay)".
"""


class _Literal(str):
    """A string that YAML writes as a block (``|``), as KubeRay's examples do."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # every pod written out whole, no &id001 anchors
        return True


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


# Ray's images give their user passwordless sudo: no privilege escalation, no capabilities.
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# fsGroup: the volume is writable by the image's user.
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100}


def _pod(container: dict, **spec) -> dict:
    return {"spec": {"securityContext": _POD_SECURITY, "containers": [{**container,
                                                                      "securityContext": _CONTAINER_SECURITY}], **spec}}


def _worker_group(name: str, container: dict, max_replicas: int) -> dict:
    return {
        "groupName": name,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": max_replicas,
        "rayStartParams": {},
        # Workers never call the Kubernetes API (the head's autoscaler does).
        "template": _pod(container, automountServiceAccountToken=False),
    }


def _in_pod(path: str) -> str:
    """Where ``path`` (from the config, ``~`` expanded here) is in a pod, whose home is HOME."""
    p = PurePosixPath(path)
    if p.is_relative_to(Path.home()):
        return str(HOME / p.relative_to(Path.home()))
    return str(p if p.is_absolute() else HOME / p)


def _claim() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": STATE_CLAIM},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": STATE_SIZE}}},
    }


def rayservice(serve_config: dict, ray_version: str, durable: Sequence[str] = (), name: str = "poly-ray") -> str:
    """The manifest's text: ``serve_config`` as its serveConfigV2, with the proxies
    listening on the pods' addresses (0.0.0.0) so that KubeRay's Service reaches them;
    and, when there are ``durable`` paths (the config's state_dir and embedded memory
    stores, which live on the head), the claim that the head mounts them from."""
    serve = {**serve_config, "http_options": {**serve_config["http_options"], "host": "0.0.0.0"}}
    head = _container("ray-head", "2", "8Gi")
    # One volume, a sub-folder per path: the head keeps its state across restarts and upgrades.
    head["volumeMounts"] = [{"name": "state", "mountPath": _in_pod(p), "subPath": f"d{i}"} for i, p in enumerate(durable)]
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
                    "template": _pod(head, volumes=[{"name": "state", "persistentVolumeClaim": {
                        "claimName": STATE_CLAIM}}]) if durable else _pod(head),
                },
                "workerGroupSpecs": [
                    _worker_group("cpu", _container("ray-worker", "8", "16Gi"), 4),
                    _worker_group("gpu", _container("ray-worker", "8", "32Gi", gpus=1), 4),
                ],
            },
        },
    }
    documents = [_claim(), manifest] if durable else [manifest]
    return HEADER + yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)
