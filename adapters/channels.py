"""Push channels (Pinduoduo's message service, Taobao's TMC): the shape of one message as the core stores it.

A channel message becomes one inbox row. Its body is the message as the platform sent it, marked with
the ``X-Coopsync-Channel`` header, and the adapter's ``parse_webhook`` turns it into notices that the
worker fetches. That header is only ever written by the channel consumer: these platforms declare no
webhooks, so the HTTP intake refuses any delivery for them before it is stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from adapters.base import header

CHANNEL_HEADER = "x-coopsync-channel"


@dataclass(frozen=True)
class ChannelMessage:
    """One pushed message. ``wanted``: it names an order or a refund (other topics are acknowledged and
    dropped: nothing a snapshot holds changes, and polling stays the truth). ``shop_id``/``shop_nick``:
    the shop it belongs to (PDD ``mallID``, TOP ``user_id`` and ``user_nick``). ``ack`` holds what the
    platform's acknowledgement names."""

    channel: str
    message_id: str | None
    topic: str
    shop_id: str | None
    body: bytes
    wanted: bool
    shop_nick: str | None = None
    ack: Mapping[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {CHANNEL_HEADER: self.channel}

    @property
    def dedupe_key(self) -> str:
        """The inbox's delivery identity: the platform's message id (a redelivery after a lost
        acknowledgement carries it again), else a digest of the message."""
        if self.message_id:
            return f"{self.channel}:{self.message_id}"[:255]
        return f"{self.channel}:sha256:{hashlib.sha256(self.body).hexdigest()}"


def channel_of(headers: Mapping[str, str]) -> str | None:
    """The channel that stored a delivery, or None for anything else."""
    return header(headers, CHANNEL_HEADER)
