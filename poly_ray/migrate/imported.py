"""What an import produced: the config, as plain data to write as TOML, and a note for
each key of the other server's file that has no equivalent here, with why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from poly_ray.errors import ConfigError


class NotThatFormat(ConfigError):
    """The file is not the kind of config the import reads."""


@dataclass
class Imported:
    config: dict[str, Any]
    # "key: why it is not mapped", in the other file's own spelling of the key.
    unmapped: list[str] = field(default_factory=list)
    # What was mapped in a way the user should know about.
    notes: list[str] = field(default_factory=list)
