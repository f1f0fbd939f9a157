"""`hwrepo.toml`: the one schema of the optional manifest, and reading it.

At the revision root, a manifest configures every kind: `[simulation]` and `[[testbench]]`
(which may also sit in sub-directories, one manifest per design), `[rtl]` and `[kicad]`. Every
key is optional. Each table is validated on its own, so a mistake in one table stops only the
checks that read it; every error names the file, the table and the key:

    hwrepo.toml: [kicad] fail_on: ...
    hwrepo.toml: [[testbench]] 2: simulators: 'modelsim' is not one of icarus, verilator

The README shows the whole file.
"""

from __future__ import annotations

import functools
import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

SEVERITIES = ("error", "warning", "info")
DEFAULT_FAIL_ON = ["error"]
MAX_KICAD_TIMEOUT_S = 24 * 3600.0


MANIFEST = "hwrepo.toml"


SIMULATORS: tuple[str, ...] = ("icarus", "verilator")


Simulator = Literal["icarus", "verilator"]


DEFAULT_COCOTB = "2.1.0"


# The releases a testbench may ask for: "x.y" means the newest x.y.z listed.
COCOTB_RELEASES: tuple[str, ...] = ("2.1.0", "2.0.1", "2.0.0", "1.9.2", "1.9.1", "1.9.0")


DEFAULT_TIMEOUT_S = 900.0


MAX_TIMEOUT_S = 4 * 3600.0


_TIMESCALE_VALUE_RE = re.compile(
    r"^\s*(1|10|100)\s*(s|ms|us|ns|ps|fs)\s*/\s*(1|10|100)\s*(s|ms|us|ns|ps|fs)\s*$"
)


_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


Scalar = str | int | bool


def _hdl_value(value: Scalar | float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _check_names(values: dict[str, Any], what: str) -> dict[str, Any]:
    for name in values:
        if not _NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a valid {what} name")
    return values


def _module_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a module name")
    return v


ModuleName = Annotated[str, AfterValidator(_module_name)]


Defines = Annotated[
    dict[str, Scalar], AfterValidator(functools.partial(_check_names, what="define"))
]


Parameters = Annotated[
    dict[str, Scalar | float], AfterValidator(functools.partial(_check_names, what="parameter"))
]


class BuildArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    icarus: list[str] = Field(default_factory=list)
    verilator: list[str] = Field(default_factory=list)


class DesignConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] | None = None
    includes: list[str] | None = None
    defines: Defines = Field(default_factory=dict)
    toplevel: ModuleName | None = None
    parameters: Parameters = Field(default_factory=dict)
    timescale: str | None = None
    build_args: BuildArgs = Field(default_factory=BuildArgs)

    @field_validator("timescale")
    @classmethod
    def _timescale(cls, v: str | None) -> str | None:
        if v is not None and not _TIMESCALE_VALUE_RE.match(v):
            raise ValueError(f'{v!r} is not a timescale like "1ns/1ps"')
        return v


class TestbenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    modules: list[str] = Field(min_length=1)
    toplevel: ModuleName | None = None
    simulators: list[str] = Field(default_factory=lambda: ["icarus"], min_length=1)
    parameters: Parameters = Field(default_factory=dict)
    defines: Defines = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S)
    requirements: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    cocotb: str | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    tests: list[str] = Field(default_factory=list)
    waves: bool = True
    python_path: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        for m in v:
            if not m.endswith(".py"):
                raise ValueError(f"{m!r} is not a Python file (expected a path ending in .py)")
        return v

    @field_validator("simulators")
    @classmethod
    def _simulators(cls, v: list[str]) -> list[str]:
        for sim in v:
            if sim not in SIMULATORS:
                raise ValueError(f"{sim!r} is not one of {', '.join(SIMULATORS)}")
        if len(set(v)) != len(v):
            raise ValueError("a simulator is listed twice")
        return v

    @field_validator("cocotb")
    @classmethod
    def _cocotb(cls, v: str | None) -> str | None:
        if v is not None:
            resolve_cocotb_release(v)
        return v

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, v: list[str]) -> list[str]:
        for line in v:
            req = parse_requirement(line)
            if canonicalize_name(req.name) == "cocotb":
                raise ValueError("cocotb is chosen with the `cocotb` key, not in requirements")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return v


def resolve_cocotb_release(value: str) -> str:
    """ "2.1" -> "2.1.0"; "1.9" -> "1.9.2"; an exact listed release is kept."""
    value = value.strip()
    if value in COCOTB_RELEASES:
        return value
    candidates = [r for r in COCOTB_RELEASES if r.startswith(value + ".")]
    if re.fullmatch(r"\d+\.\d+", value) and candidates:
        return max(candidates, key=Version)
    raise ValueError(
        f"{value!r} is not a supported cocotb release (one of 2.1, 2.0, 1.9, or "
        f"{', '.join(COCOTB_RELEASES)})"
    )


def parse_requirement(line: str) -> Requirement:
    text = line.strip()
    if text.startswith("-"):
        raise ValueError(f"{text!r}: pip options are not allowed, only requirements")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{text!r} is not a valid requirement ({exc})") from None
    if req.url:
        raise ValueError(f"{text!r}: requirements from URLs are not allowed")
    return req


# ----------------------------------------------------------------------------- [rtl], [kicad]


def _fail_on(v: list[str]) -> list[str]:
    bad = [s for s in v if s not in SEVERITIES]
    if bad or not v:
        allowed = ", ".join(f'"{s}"' for s in SEVERITIES)
        raise ValueError(f"expected a non-empty list of severities from {allowed}, got {v!r}")
    return sorted(set(v), key=SEVERITIES.index)


FailOn = Annotated[list[str], AfterValidator(_fail_on)]


def _revision_path(value: str) -> str:
    if not value or "\\" in value or value.startswith("/") or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{value!r} is not a relative revision path")
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"{value!r} points outside the revision")
    return "" if norm == "." else norm


RevisionPath = Annotated[str, AfterValidator(_revision_path)]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _defines(value: Any) -> dict[str, str | None]:
    """`{ NAME = value }` or `["NAME=value", "NAME"]`; true defines a name without a value,
    false leaves it undefined."""
    items: list[tuple[str, Any]]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(d, str) for d in value):
        items = []
        for item in value:
            name, eq, text = item.partition("=")
            items.append((name.strip(), text if eq else True))
    else:
        raise ValueError(
            f'expected a table of NAME = value or a list of "NAME=value" strings, got {value!r}'
        )
    defines: dict[str, str | None] = {}
    for name, v in items:
        if not _IDENT.fullmatch(name):
            raise ValueError(f"{name!r} is not a macro name")
        if v is False:
            continue
        if v is True:
            defines[name] = None
        elif isinstance(v, int | float) and not isinstance(v, bool):
            defines[name] = str(v)
        elif isinstance(v, str):
            if any(c in v for c in "\n\r\0"):
                raise ValueError(f"the value of {name} spans lines")
            defines[name] = v
        else:
            raise ValueError(f"the value of {name} must be a string, number or boolean, got {v!r}")
    return defines


class RtlTable(BaseModel):
    """`[rtl]`: the RTL structure and lint checks (at the revision root)."""

    model_config = ConfigDict(extra="forbid")

    sources: Annotated[list[RevisionPath], Field(min_length=1)] | None = None
    include_dirs: list[RevisionPath] = Field(default_factory=list)
    defines: Annotated[dict[str, str | None], BeforeValidator(_defines)] = Field(
        default_factory=dict
    )
    top: ModuleName | None = None
    fail_on: FailOn = Field(default_factory=lambda: list(DEFAULT_FAIL_ON))


Seconds = Annotated[float, Field(gt=0, le=MAX_KICAD_TIMEOUT_S, strict=False)]


def _not_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number of seconds, got {v!r}")
    return v


KicadSeconds = Annotated[Seconds, BeforeValidator(_not_bool)]


class KicadTable(BaseModel):
    """`[kicad]`: DRC, ERC and renders (at the revision root)."""

    model_config = ConfigDict(extra="forbid")

    fail_on: FailOn = Field(default_factory=lambda: list(DEFAULT_FAIL_ON))
    drc_timeout_s: KicadSeconds | None = None
    erc_timeout_s: KicadSeconds | None = None
    render_timeout_s: KicadSeconds | None = None


class HwrepoToml(BaseModel):
    """The whole file. Tables of other programs are ignored."""

    model_config = ConfigDict(extra="ignore")

    simulation: DesignConfig = Field(default_factory=DesignConfig)
    testbench: list[TestbenchConfig] = Field(default_factory=list)
    rtl: RtlTable | None = None
    kicad: KicadTable | None = None


# ----------------------------------------------------------------------------- reading


def _where(loc: tuple[Any, ...]) -> str:
    """("kicad", "fail_on") -> "[kicad] fail_on"; ("testbench", 1, "simulators") ->
    "[[testbench]] 2: simulators"."""
    if not loc:
        return ""
    table, rest = str(loc[0]), list(loc[1:])
    if table == "testbench" and rest and isinstance(rest[0], int):
        head = f"[[testbench]] {rest.pop(0) + 1}:"
    elif table in HwrepoToml.model_fields:
        head = f"[{table}]"
    else:
        head = table
    keys = ""
    for item in rest:
        keys += f"[{item}]" if isinstance(item, int) else (f".{item}" if keys else str(item))
    return f"{head} {keys}".strip()


def format_errors(
    exc: ValidationError, path: str, prefix: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], str]]:
    """Each error's location and its message, "hwrepo.toml: [table] key: what is wrong"."""
    messages = []
    for err in exc.errors():
        items = list(err["loc"])
        # A bad item of a list of plain values is reported on the list itself.
        if err["type"] == "value_error" and items and isinstance(items[-1], int):
            items = items[:-1]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "model_type":
            msg = f"must be a table, got {err.get('input')!r}"
        where = _where((*prefix, *items))
        text = f"{path}: {where}: {msg}" if where else f"{path}: {msg}"
        messages.append(((*prefix, *items), text))
    return messages


class ManifestError(ValueError):
    """A manifest (or one table of it) that cannot be used; the message says where and why."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        super().__init__("; ".join(text for _, text in problems))
        self.problems = problems  # (location, message): ("kicad", "fail_on"), "hwrepo.toml: ..."

    def concerning(self, keys: set[str], known: set[str]) -> list[str]:
        """The messages about these keys of a table, about keys it does not know, and about
        the table or the file as a whole."""
        return [
            text
            for loc, text in self.problems
            if len(loc) < 2 or str(loc[1]) in keys or str(loc[1]) not in known
        ]


@dataclass
class Manifest:
    """One `hwrepo.toml`, read: each table validated on demand, on its own."""

    path: str
    raw: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # not TOML at all: every table is unusable

    @classmethod
    def parse(cls, path: str, data: bytes | None) -> Manifest:
        if data is None:
            return cls(path)
        try:
            return cls(path, tomllib.loads(data.decode("utf-8")))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            return cls(path, problem=f"{path}: not valid TOML: {exc}")

    def has(self, table: str) -> bool:
        return table in self.raw

    def table(self, name: str) -> Any:
        """The validated table `name` (None when absent, for [rtl] and [kicad]); raises
        ManifestError naming every problem of that table."""
        if self.problem is not None:
            raise ManifestError([((), self.problem)])
        try:
            partial = HwrepoToml.model_validate({name: self.raw[name]} if name in self.raw else {})
        except ValidationError as exc:
            raise ManifestError(format_errors(exc, self.path)) from None
        return getattr(partial, name)
