"""Reading the YAML files users write (manifests, scoring configs, metadata): one place
that turns every way such a file can be wrong into one clear UserError naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from e2lmc.errors import UserError


def read_yaml_mapping(path: Path, *, missing: str, expected: str,
                      empty_ok: bool = False) -> dict[str, Any]:
    """The mapping in `path`. `missing` / `expected` finish the error messages with the fix."""
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if doc is None and empty_ok:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected {expected}")
    return doc
