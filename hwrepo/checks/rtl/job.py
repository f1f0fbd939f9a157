"""What an RTL job carries (its `params`), read by the planner and inside the sandbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DesignParams:
    """What an RTL job carries (its `params`)."""

    root: str
    sources: list[str]
    include_dirs: list[str] = field(default_factory=list)
    defines: dict[str, str | None] = field(default_factory=dict)
    top: str | None = None
    fail_on: list[str] = field(default_factory=lambda: ["error"])

    def to_params(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "sources": self.sources,
            "include_dirs": self.include_dirs,
            "defines": self.defines,
            "top": self.top,
            "fail_on": self.fail_on,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DesignParams:
        return cls(
            root=str(params.get("root", "")),
            sources=[str(s) for s in params.get("sources", [])],
            include_dirs=[str(d) for d in params.get("include_dirs", [])],
            defines={
                str(k): None if v is None else str(v) for k, v in params.get("defines", {}).items()
            },
            top=params.get("top"),
            fail_on=[str(s) for s in params.get("fail_on", ["error"])],
        )
