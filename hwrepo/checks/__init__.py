"""Check kinds: each module defines one kind (plan jobs from a revision, run one job in a
workspace, return a result) and is listed once in `registry.py`."""
