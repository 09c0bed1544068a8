"""Typed settings from ``COOPSYNC_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # COOPSYNC_APPS__SHOPIFY__CLIENT_ID=... fills apps["shopify"]["client_id"].
    model_config = SettingsConfigDict(env_prefix="COOPSYNC_", env_file=None, extra="ignore", env_nested_delimiter="__")

    database_url: str = "sqlite+aiosqlite:///./var/coopsync.db"
    admin_token: SecretStr | None = None
    # Fernet keys, comma-separated, newest first, that encrypt store credentials and webhook secrets (app/crypto.py).
    secret_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    workers: bool = True  # run the job workers inside the API process
    # job loops per process (SQLite: for the jobs that call platforms), plus one local loop for the
    # database-only jobs (inbox.apply, ...), which a stuck platform call cannot hold up
    worker_concurrency: int = 2
    worker_poll_s: float = 0.2  # seconds between polls of an empty job table
    job_lease_s: float = 60.0  # seconds a claimed job is ours before another worker may take it
    # Seconds a job may run before it is cut off and retried with back-off; never more than 90% of the
    # lease (a job that extends its lease extends this too), so no job outlives its lease.
    job_timeout_s: float = 50.0
    # During a webhook burst (the inbox group commits carry intake_burst_rows deliveries or more, median
    # of the last few), the loop that applies them takes at most this share of the time, so that
    # acknowledgements keep their speed; the backlog drains at full speed once the burst is over.
    apply_share_under_intake: float = 0.25
    intake_burst_rows: int = 8
    max_body_bytes: int = 1024 * 1024  # 1 MiB, for webhooks and API requests alike
    db_pool_size: int = 8

    # The base of every URL the service hands out (webhook URLs, the OAuth redirect); default: the request's.
    public_url: str | None = None
    # The cooperative's app on each platform (client id and secret, app key): per platform, the credential
    # fields a store of it may leave out. A store's own credentials (a self-use app) take precedence.
    apps: dict[str, dict[str, str]] = {}

    dividend_url: str | None = None
    dividend_secret: SecretStr | None = None  # Standard Webhooks form: whsec_<base64>
    dividend_timeout_s: float = 15.0  # seconds per POST
    dividend_max_attempts: int = 12  # then the delivery is dead
    dividend_backoff_base_s: float = 5.0  # seconds; doubles per attempt, full jitter
    dividend_backoff_cap_s: float = 3600.0  # seconds

    settlement_interval_s: float = 86400.0  # the scheduled settlement run, seconds
    scheduler_tick_s: float = 5.0  # seconds between scheduler passes (polls, settlement)
    poll_overlap_s: float = 300.0  # seconds a poll window reaches back before the last high water
    poll_lag_s: float = 60.0  # seconds a poll window stops short of now
    stock_push_debounce_s: float = 0.05  # seconds a push waits so a burst of sales goes out as one figure
    job_retention_days: float = 30.0  # finished jobs are deleted after this many days (0: kept)
    inbox_retention_days: float = 90.0  # applied inbox rows (raw deliveries) likewise; failed ones are kept
    inbox_group_commit_ms: float = 0.0  # ms to wait for more rows; 0: batch what queued during the last commit

    # Push channels (app/services/channels.py): Pinduoduo's message service and Taobao's TMC, read by one
    # replica per app. Off unless enabled here and the platform's app is set in ``apps`` (client_id and
    # client_secret; app_key and app_secret); polling stays on either way.
    pdd_message_service: bool = False
    pdd_message_url: str = "wss://message-api.pinduoduo.com"
    taobao_tmc: bool = False
    taobao_tmc_url: str = "https://eco.taobao.com/router/rest"  # the TOP gateway the consume/confirm calls go to
    taobao_tmc_group: str = "default"
    taobao_tmc_idle_s: float = 1.0  # seconds between consume calls while TMC has nothing for us
    channel_lease_s: float = 30.0  # seconds a replica holds a channel without renewing; then another takes it
    channel_renew_s: float = 10.0  # seconds between renewals (and waits for a held lease); under the lease
    channel_heartbeat_s: float = 10.0  # seconds between heartbeats on an open connection
    channel_backoff_base_s: float = 1.0  # seconds before the first reconnect; doubles, full jitter
    channel_backoff_cap_s: float = 60.0  # seconds, the longest wait between reconnects

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.split(":///", 1)[1]
        return value

    @model_validator(mode="after")
    def _renewed_within_the_lease(self) -> "Settings":
        if not 0 < self.channel_renew_s < self.channel_lease_s:
            raise ValueError("channel_renew_s must be positive and shorter than channel_lease_s, or a channel "
                             "holder's lease runs out between renewals and two replicas consume at once")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
