"""A geckos.io client in Python (aiortc), doing what ``@geckos.io/client`` v3 does: ``POST
/connections`` for the server's offer, answer it, ``POST`` the answer, poll the additional
candidates, and use the data channel the server opens (label ``geckos.io``). Messages are
geckos-framed: ``emit(name, data)`` sends ``{"<name>": data}``. For tests and the bench."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from sessionhub.relay.datagrams import gather_on, make_id, parse


class GeckosPeer:
    """One connection; ``got`` is ``[(event, data), ...]`` in arrival order."""

    def __init__(self, url: str, *, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.url = url.rstrip("/") + "/.wrtc/v2"
        self.addresses = addresses
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel: RTCDataChannel | None = None
        self.id = ""
        self.got: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self.on_message: Any = None

    async def connect(self, http: httpx.AsyncClient, wait: float = 10.0) -> GeckosPeer:
        r = await http.post(f"{self.url}/connections")
        r.raise_for_status()
        offer = r.json()
        self.id = offer["id"]

        @self.pc.on("datachannel")  # type: ignore[untyped-decorator]
        def on_channel(channel: RTCDataChannel) -> None:
            self.channel = channel

            @channel.on("message")  # type: ignore[untyped-decorator]
            def on_message(message: str | bytes) -> None:
                if self.on_message is not None:
                    self.on_message(message)
                self.got.append(parse(message))
                self.arrived.set()

            self.opened.set()

        await self.pc.setRemoteDescription(RTCSessionDescription(**offer["localDescription"]))
        with gather_on(self.addresses):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        local = self.pc.localDescription
        answer = {"type": local.type, "sdp": local.sdp}
        r = await http.post(f"{self.url}/connections/{self.id}/remote-description", json=answer)
        r.raise_for_status()
        extra = await http.get(f"{self.url}/connections/{self.id}/additional-candidates")
        assert extra.json() == []
        await asyncio.wait_for(self.opened.wait(), wait)
        return self

    def emit(self, event: str, data: Any = None, *, reliable: bool = False) -> None:
        assert self.channel is not None
        if reliable:  # geckos: the same ID sent 10 times (here at once)
            wrapped = {"MESSAGE": data, "RELIABLE": 1, "ID": make_id()}
            for _ in range(10):
                self.channel.send(json.dumps({event: wrapped}))
            return
        self.channel.send(json.dumps({event: data}))

    def raw(self, message: str | bytes) -> None:
        assert self.channel is not None
        self.channel.send(message)

    def of(self, event: str) -> list[Any]:
        return [d for e, d in self.got if e == event]

    async def wait_for(self, event: str, count: int = 1, wait: float = 5.0) -> list[Any]:
        async with asyncio.timeout(wait):
            while len(self.of(event)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.of(event)

    async def close(self, http: httpx.AsyncClient | None = None) -> None:
        if http is not None and self.id:
            with contextlib.suppress(Exception):
                await http.post(f"{self.url}/connections/{self.id}/close")
        await self.pc.close()
