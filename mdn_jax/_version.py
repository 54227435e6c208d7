"""The package version, written once, in pyproject.toml.

An installed package reads it from its metadata (`importlib.metadata`). Running from a source
checkout, the pyproject.toml beside the package is read instead: an installed copy may be
missing or stale, and the version must name the code that is actually running.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def version() -> str:
    """The version string, e.g. '0.2.0' ('0+unknown' if neither source names one)."""
    try:
        project = tomllib.loads(_PYPROJECT.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        project = {}
    if project.get("name") == "mdn_jax" and "version" in project:
        return str(project["version"])
    try:
        return metadata.version("mdn_jax")
    except metadata.PackageNotFoundError:
        return "0+unknown"
