"""A fake Pinduoduo message service: a real WebSocket server on 127.0.0.1 that behaves as operations.md 6.1
describes (signed connect URL, ``Common`` frames, ``Ack`` and ``HeartBeat`` from the client) and, where the
facts are silent, as a careful consumer must assume: what was not acknowledged is sent again on the next
connection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

CLIENT_ID = "coop-client"
CLIENT_SECRET = "coop-secret"


def expected_sign(client_id: str, timestamp: str, secret: str) -> str:
    # Written out here rather than imported, so the adapter's sign is checked against the documented recipe.
    return base64.b64encode(hashlib.md5(f"{client_id}{timestamp}{secret}".encode()).hexdigest().encode()).decode()


@dataclass
class Connection:
    """One client connection as the server saw it."""

    sent: list[int] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)


class FakeMessageService:
    """Publish messages with ``publish``; each connection gets every message not acknowledged yet, in order.

    ``plan``: per connection, ``(frames, wait_for_acks)``: after sending that many frames, close the
    connection (at once, with frames in flight, or once the client acknowledged all of them). ``lost_acks``:
    message ids whose next ack is dropped on the way, as if the network lost it."""

    def __init__(self, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> None:
        self.client_id = client_id
        self.secret = secret
        self.pending: dict[int, str] = {}  # message id -> frame, until acknowledged
        self.acked: list[int] = []
        self.heartbeats = 0
        self.connections: list[Connection] = []
        self.open = 0
        self.max_open = 0
        self.refused = 0
        self.plan: list[tuple[int, bool]] = []
        self.lost_acks: set[int] = set()
        self.on_ack: Callable[[int], None] | None = None  # called as each ack arrives, before it counts
        self._ids = itertools.count(7_000_000_001)
        self._server = None
        self.url = ""

    def publish(self, mall_id: str, topic: str, content: dict) -> int:
        message_id = next(self._ids)
        now = int(time.time() * 1000)
        self.pending[message_id] = json.dumps({
            "id": message_id, "commandType": "Common", "time": now, "sendTime": now,
            "message": {"type": topic, "mallID": int(mall_id) if mall_id.isdigit() else mall_id,
                        "content": json.dumps(content)}})
        return message_id

    def deliveries(self, message_id: int) -> int:
        return sum(c.sent.count(message_id) for c in self.connections)

    async def __aenter__(self) -> "FakeMessageService":
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check_sign,
                                   ping_interval=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _check_sign(self, connection: ServerConnection, request):
        parts = request.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "message" or parts[1] != self.client_id \
                or parts[3] != expected_sign(parts[1], parts[2], self.secret):
            self.refused += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "bad sign\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        seen = Connection()
        self.connections.append(seen)
        plan = self.plan.pop(0) if self.plan else None
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        reader = asyncio.create_task(self._read(ws, seen))
        try:
            while True:
                for message_id, frame in list(self.pending.items()):
                    if message_id in seen.sent or message_id not in self.pending:
                        continue
                    if plan is not None and len(seen.sent) >= plan[0]:
                        break
                    await ws.send(frame)
                    seen.sent.append(message_id)
                if plan is not None and len(seen.sent) >= plan[0]:
                    if plan[1]:
                        while len(seen.acks) < len(seen.sent):
                            await asyncio.sleep(0.01)
                    await ws.close(1011, "dropped by the test")
                    return
                if reader.done():  # the client went away
                    return
                await asyncio.sleep(0.01)
        except ConnectionClosed:
            return
        finally:
            self.open -= 1
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: ServerConnection, seen: Connection) -> None:
        async for text in ws:
            frame = json.loads(text)
            if frame.get("commandType") == "HeartBeat":
                self.heartbeats += 1
            elif frame.get("commandType") == "Ack":
                message_id = int(frame["id"])
                if self.on_ack is not None:
                    self.on_ack(message_id)
                seen.acks.append(message_id)
                if message_id in self.lost_acks:
                    self.lost_acks.discard(message_id)
                    continue
                if self.pending.pop(message_id, None) is not None:
                    self.acked.append(message_id)
