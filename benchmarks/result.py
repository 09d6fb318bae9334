"""One measured comparison: the fast path, the path it replaces, their ratio and the floor it must meet."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Measurement:
    case: str                      # letter of the table (a..g)
    what: str                      # e.g. "alignment step, phase pre"
    fast_label: str
    fast: float
    simple_label: str = ""
    simple: float | None = None
    unit: str = "s"
    ratio: float | None = None     # the figure compared with the floor
    floor: float | None = None
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.floor is None or self.ratio is None:
            return None
        return self.ratio >= self.floor if self.higher_is_better else self.ratio <= self.floor

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), met=self.met)
