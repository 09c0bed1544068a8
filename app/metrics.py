"""Prometheus metrics of the service (requests, webhooks, jobs, stock, dividends)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("coopsync_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "coopsync_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WEBHOOKS = Counter("coopsync_webhooks_total", "Webhook deliveries by outcome", ["platform", "outcome"])
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "coopsync_webhook_signature_failures_total", "Webhooks refused for a bad signature", ["platform"]
)
INBOX_APPLIED = Counter("coopsync_inbox_applied_total", "Inbox rows applied by outcome", ["outcome"])
JOBS = Counter("coopsync_jobs_total", "Jobs finished by name and outcome", ["name", "outcome"])
OVERSOLD_LINES = Counter("coopsync_oversold_lines_total", "Order lines paid beyond available stock")
STOCK_PUSHES = Counter("coopsync_stock_pushes_total", "Stock pushes per listing by outcome", ["platform", "outcome"])
JOBS_OLDEST_DUE_AGE = Gauge(
    "coopsync_jobs_oldest_due_age_seconds",
    "Seconds the oldest due queued job has waited since it fell due (0: none due); a stalled runner grows it")
JOBS_OLDEST_DUE_AGE_BY_NAME = Gauge(
    "coopsync_jobs_oldest_due_age_seconds_by_name", "The same per job name (only names with a due job)", ["name"])
JOBS_DUE = Gauge("coopsync_jobs_due", "Queued jobs that are due, per job name", ["name"])
JOBS_LEASE_EXPIRED = Gauge(
    "coopsync_jobs_lease_expired", "Running jobs whose lease ran out (a worker died or stalled; reaped soon)")
DIVIDEND_PENDING = Gauge("coopsync_dividend_deliveries_pending", "Dividend deliveries not yet delivered")
DIVIDEND_OLDEST_AGE = Gauge(
    "coopsync_dividend_oldest_pending_age_seconds", "Age of the oldest undelivered dividend statement"
)
STORE_TOKEN_EXPIRES_IN = Gauge(
    "coopsync_store_token_expires_in_seconds",
    "Seconds until a store's access token expires (negative: expired; absent: it does not expire)",
    ["store_id", "platform"],
)
STORES_NEEDING_AUTHORIZATION = Gauge(
    "coopsync_stores_needing_authorization", "Stores whose authorisation expired or was revoked", ["platform"])
STORE_REAUTHORIZATION_NEEDED = Counter(
    "coopsync_store_reauthorization_needed_total", "Times a store fell out of authorisation", ["platform", "status"])
TOKEN_REFRESHES = Counter("coopsync_token_refreshes_total", "Token refreshes by outcome", ["platform", "outcome"])
CHANNEL_CONNECTED = Gauge(
    "coopsync_channel_connected", "1 while this process holds a push channel's lease and is connected to it",
    ["channel"])
CHANNEL_MESSAGES = Counter(
    "coopsync_channel_messages_total",
    "Push channel messages by outcome (accepted, duplicate, ignored, unknown_shop, store_failed)", ["channel", "outcome"])
CHANNEL_RECONNECTS = Counter(
    "coopsync_channel_reconnects_total", "Push channel connections that ended and were opened again", ["channel"])
