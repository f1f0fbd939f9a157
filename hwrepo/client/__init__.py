"""The hwrepo client: what a CI job or a person at a terminal uses against any hwrepo server,
through its public HTTP API only (login, push, checks, logs, diff, kicad …)."""

import sys

# httpx imports its own command line (click, rich, pygments) whenever those are installed; the
# client never runs it, and every `hwrepo` start would pay for it. A None entry makes httpx take
# its fallback (a `main` that says the command line is not available).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
