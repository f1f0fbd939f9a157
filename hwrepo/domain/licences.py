"""Licences a project may declare: any SPDX licence expression (CERN-OHL-S/W/P-2.0 for hardware,
MulanPSL-2.0 as used on OpenI), or a `LicenseRef-...` of the project's own."""

from __future__ import annotations

import re
from functools import cache

from license_expression import ExpressionError, Licensing, get_spdx_licensing

from hwrepo.domain.errors import Invalid

_LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.-]+$")


@cache
def _spdx() -> Licensing:
    return get_spdx_licensing()


def check_licence(value: str) -> str:
    value = value.strip()
    if _LICENSE_REF.match(value):
        return value
    try:
        parsed = _spdx().parse(value, strict=True)
        # A LicenseRef-... may appear inside an expression too ("MIT OR LicenseRef-mine").
        unknown = [
            key
            for key in (_spdx().unknown_license_keys(parsed) if parsed is not None else [])
            if not _LICENSE_REF.match(key)
        ]
        if unknown:
            raise ExpressionError(f"Unknown license key(s): {', '.join(unknown)}")
    except ExpressionError as exc:
        raise Invalid(
            f"licence {value!r} is not a known SPDX licence expression ({exc}); "
            "use an SPDX id such as CERN-OHL-S-2.0, CERN-OHL-W-2.0, CERN-OHL-P-2.0, "
            "MulanPSL-2.0, Apache-2.0, or LicenseRef-<name> for a licence of your own",
            field="licence",
        ) from exc
    if parsed is None:
        raise Invalid("licence must not be empty", field="licence")
    return str(parsed)
