"""The configuration reference (docs/operations/configuration.md) is written from the
schema by ``poly-ray docs``: the committed page must be what the command writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poly_ray.config import docs
from poly_ray.config.schema import Config

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_configuration_reference_is_what_poly_ray_docs_writes(tmp_path):
    # Run elsewhere (the default path is relative), with this checkout's package.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "poly_ray.cli", "docs"], cwd=tmp_path, env=env, check=True)
    written = (tmp_path / docs.PAGE).read_text()
    committed = (REPO / docs.PAGE).read_text() if (REPO / docs.PAGE).exists() else ""
    assert committed == written, f"{docs.PAGE} is stale: run `poly-ray docs` (or make docs) and commit it"


def test_every_key_has_a_description_and_a_row():
    page = docs.reference()
    for section in ("## Top level", "## `[models.NAME]`", "## `[models.NAME.autoscaling]`",
                    "## `[[models.NAME.lora_adapters]]`", "## `[tasks.NAME]`", "## `[tasks.NAME.biaser]`",
                    "## `[tasks.NAME.memorization]`", "## `[memories.NAME]`", "## `[memories.NAME.store]`",
                    "## `[memories.NAME.store.file]`", "## `[memories.NAME.store.qdrant]`", "## `[schema_limits]`",
                    "## `[[allowed_keys]]`", "## `[jwt_private_key]`", "## `[jwt_public_key]`"):
        assert f"\n{section}\n" in page, section
    for name in Config.model_fields:
        assert f"\n| `{name}` |" in page, name


def test_a_key_without_a_description_stops_the_writer():
    from pydantic import BaseModel

    class Undocumented(BaseModel):
        size: int = 1

    with pytest.raises(ValueError, match=r"Undocumented.size has no Field\(description=...\)"):
        docs._section(docs._Section("[x]", Undocumented), {})


def test_the_pages_links_point_at_its_headings():
    import re

    page = docs.reference()
    anchors = {docs._slug(h) for h in re.findall(r"^## (.+)$", page, re.MULTILINE)}
    links = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert links and links <= anchors, links - anchors
