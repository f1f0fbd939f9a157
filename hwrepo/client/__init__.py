"""The hwrepo client: what a CI job or a person at a terminal uses against any hwrepo server,
through its public HTTP API only (login, push, checks, logs, diff, kicad …)."""
