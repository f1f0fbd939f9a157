"""Reading a simulation's waveform (FST, VCD, GHW) for the waveform viewer, in the sandbox.

A waveform is written by the design's testbench: hostile input to the reader (pywellen, a Rust
parser). So it is read here, in a sandbox of its own (`service_layer/waveforms.py` starts it),
with the file mounted read-only at /cache and bounded time and memory; what comes back is
plain JSON of bounded size.

    signals(request)  {"file"} -> {"timescale_s", "end", "signals": [{name, width, kind}]}
    changes(request)  {"file", "signals": [names], "start", "end", "pixels"}
                      -> {"signals": {name: {"width", "initial", "changes": [[t, v, n]]}}}

Values are bit strings, most significant bit first, with `x` and `z` kept ("0101", "x1zz");
real-valued signals give their decimal text. Changes are decimated to one per pixel: a pixel
holding more than one change keeps the last value and `n`, the number of changes it holds,
so the viewer draws a dense stretch as such without receiving every edge.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

MAX_SIGNALS = 100_000  # in the hierarchy listing
MAX_SHOWN = 64  # signals per changes request
MAX_PIXELS = 8192
UNITS = {"fs": 1e-15, "ps": 1e-12, "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def _open(request: dict[str, Any]) -> Any:
    import pywellen

    path = Path(str(request["file"]))
    if not path.is_file():
        raise ValueError(f"no waveform at {path}")
    return pywellen.Waveform(str(path), multi_threaded=False)


def _timescale_s(wave: Any) -> float:
    scale = wave.timescale
    if scale is None:
        return 1e-9
    unit = str(scale.unit).rsplit(".", 1)[-1]
    return float(scale.factor) * UNITS.get(unit, 1e-9)


def _bits(value: Any, width: int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return format(value, f"0{max(width, 1)}b")[-max(width, 1) :]
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _kind(var: Any) -> str:
    if var.is_real:
        return "real"
    if var.is_string:
        return "string"
    return "bit" if var.bitwidth == 1 else "bus"


def signals(request: dict[str, Any]) -> dict[str, Any]:
    wave = _open(request)
    found = []
    end = 0
    for var in wave.all_vars():
        if len(found) >= MAX_SIGNALS:
            break
        width = int(var.bitwidth or 1)
        found.append({"name": var.full_name, "width": width, "kind": _kind(var)})
    for var in list(wave.all_vars())[:MAX_SHOWN]:
        signal = var.signal
        if len(signal):
            end = max(end, int(signal[len(signal) - 1][0]))
    return {
        "timescale_s": _timescale_s(wave),
        "end": end,
        "format": str(wave.file_format),
        "signals": found,
        "truncated": len(found) >= MAX_SIGNALS,
    }


class _Times:
    """A signal's change times as a sequence, for bisect (without copying them all)."""

    def __init__(self, signal: Any) -> None:
        self.signal = signal

    def __len__(self) -> int:
        return len(self.signal)

    def __getitem__(self, i: int) -> int:
        return int(self.signal[i][0])


def _decimated(
    signal: Any, width: int, start: int, end: int, pixels: int
) -> tuple[str | None, list[list[Any]]]:
    times = _Times(signal)
    count = len(signal)
    first = bisect.bisect_right(times, start)  # changes after `start`
    initial = _bits(signal[first - 1][1], width) if first > 0 else None
    span = max(end - start, 1)
    out: list[list[Any]] = []
    i = first
    while i < count:
        t = times[i]
        if t > end:
            break
        pixel = (t - start) * pixels // span
        # the last change inside this pixel, found by bisect: no walk over every edge
        pixel_end = start + ((pixel + 1) * span + pixels - 1) // pixels
        j = bisect.bisect_left(times, pixel_end, lo=i + 1, hi=count)
        j = max(j, i + 1)
        last_in_pixel = min(j, count) - 1
        while last_in_pixel > i and times[last_in_pixel] > end:
            last_in_pixel -= 1
        value = _bits(signal[last_in_pixel][1], width)
        out.append([t, value, last_in_pixel - i + 1])
        i = last_in_pixel + 1
    return initial, out


def changes(request: dict[str, Any]) -> dict[str, Any]:
    wave = _open(request)
    wanted = [str(n) for n in request.get("signals", [])][:MAX_SHOWN]
    start = max(int(request.get("start", 0)), 0)
    end = max(int(request.get("end", start + 1)), start + 1)
    pixels = min(max(int(request.get("pixels", 1000)), 1), MAX_PIXELS)
    by_name = {}
    names = set(wanted)
    for var in wave.all_vars():
        if var.full_name in names and var.full_name not in by_name:
            by_name[var.full_name] = var
    out: dict[str, Any] = {}
    for name in wanted:
        var = by_name.get(name)
        if var is None:
            out[name] = {"missing": True}
            continue
        width = int(var.bitwidth or 1)
        initial, found = _decimated(var.signal, width, start, end, pixels)
        out[name] = {"width": width, "kind": _kind(var), "initial": initial, "changes": found}
    return {"start": start, "end": end, "pixels": pixels, "signals": out}
