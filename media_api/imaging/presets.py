"""Variant presets (``name:size[:crop]``), parsed once: settings hold them, render() uses them.

Apart from ``variants`` so that settings (and with them the API) never import libvips.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class Preset:
    """A named target size; names become storage keys, so they are kept to a safe alphabet.

    ``crop``: a centred square cover crop of ``size`` px; otherwise the longer side is fitted.
    """

    name: str
    size: int
    crop: bool

    def __post_init__(self) -> None:
        """Fail when the presets are configured, not on the first image."""
        if not _NAME.fullmatch(self.name):
            msg = f"preset name {self.name!r} must be 1-32 ASCII letters, digits, _ or -"
            raise ValueError(msg)
        if not 1 <= self.size <= 8192:
            msg = f"preset size {self.size} must be within 1..8192"
            raise ValueError(msg)

    @classmethod
    def parse(cls, spec: str) -> Preset:
        """`thumb:256:crop` or `medium:1024`."""
        name, _, rest = spec.strip().partition(":")
        size, _, mode = rest.partition(":")
        if not size.isdigit() or mode not in ("", "crop"):
            raise ValueError(f"bad preset {spec!r}: use name:size or name:size:crop")
        return cls(name, int(size), crop=mode == "crop")


DEFAULT_PRESETS: Final = (
    Preset("thumb", 256, True),
    Preset("medium", 1024, False),
    Preset("large", 2048, False),
)


def parse_presets(specs: str | Iterable[str | Preset]) -> tuple[Preset, ...]:
    """A comma list (or a list) of specs as presets: at least one, names unique."""
    if isinstance(specs, str):
        specs = [part for part in specs.split(",") if part.strip()]
    presets = tuple(p if isinstance(p, Preset) else Preset.parse(str(p)) for p in specs)
    names = [p.name for p in presets]
    if not presets or len(set(names)) != len(names):
        raise ValueError(f"presets need unique names, at least one: {names}")
    return presets
