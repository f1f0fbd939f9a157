"""Prometheus metrics (one registry per process; /metrics serves it)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("hwrepo_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("hwrepo_http_request_seconds", "HTTP request latency", ["method", "route"])
REVISIONS = Counter("hwrepo_revisions_created_total", "Revisions created")
BLOB_BYTES = Counter("hwrepo_blob_bytes_written_total", "New blob bytes written to S3")
EVENTS_PUBLISHED = Counter("hwrepo_events_published_total", "Outbox events published")
