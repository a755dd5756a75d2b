"""The deployment files validate with Ray's own tooling."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


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
