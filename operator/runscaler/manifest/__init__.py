"""The manifest: YAML/TOML to a validated `Fleet`, with located errors and the JSON Schema.

`load_manifest`, `load_manifest_text` and `LoadedManifest` are re-exported from `loading`,
imported on first use so that importing `runscaler.manifest.values` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runscaler.manifest.loading import LoadedManifest, load_manifest, load_manifest_text

__all__ = ["LoadedManifest", "load_manifest", "load_manifest_text"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runscaler.manifest import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
