"""The peer servers' code: Node ``ws`` and uWebSockets.js (scripts run by ``node``), and
Python ``websockets`` and picows (run by ``fanout.py _serve NAME PORT``). Each speaks plain
WebSocket: ``/pub`` publishes, any other path subscribes, and no subscriber is ever
skipped or dropped."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

NODE_SERVER = r"""
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });
wss.on('connection', (ws, req) => {
  if (req.url.startsWith('/pub')) {
    ws.on('message', (data) => {
      for (const c of wss.clients) if (c !== ws && c.readyState === 1) c.send(data, { binary: false });
    });
  }
});
wss.on('listening', () => console.log('ready'));
"""

# The package falls back to a pure-JS emulation (on top of `ws`) when its binary does not
# load, silently but for a warning; the bench loads the binary itself so that the column is
# uWebSockets or nothing.
UWS_SERVER = r"""
const path = require('path');
let uWS;
try {
  const dir = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  uWS = require(path.join(dir, 'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`));
} catch (e) {
  console.log('unavailable: ' + String(e.message).split('\n')[0]);
  process.exit(3);
}
const port = Number(process.argv[2]);
const app = uWS.App();
app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  // Like the other servers, never skip or drop a slow subscriber.
  maxBackpressure: 1024 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  upgrade: (res, req, context) => {
    res.upgrade({ pub: req.getUrl().startsWith('/pub') },
      req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'), context);
  },
  open: (ws) => { if (!ws.getUserData().pub) ws.subscribe('bench'); },
  message: (ws, message, isBinary) => {
    if (ws.getUserData().pub) app.publish('bench', message, isBinary);
  },
});
app.listen('127.0.0.1', port, (token) => {
  if (token) console.log('ready'); else { console.log('unavailable: listen failed'); process.exit(1); }
});
"""


def serve_websockets(port: int) -> None:
    import logging

    import uvloop

    # Subscribers are cut off at the end of a run; their "no close frame" is noise here.
    logging.disable(logging.CRITICAL)
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path.startswith("/pub"):
            async for msg in ws:
                broadcast(clients, msg)
            return
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            port,
            compression=None,
            ping_interval=None,
            max_size=None,
            backlog=4096,
        ):
            print("ready", flush=True)
            await asyncio.Future()

    uvloop.run(main())


def ws_server_frame(payload: bytes) -> bytes:
    """An unmasked text frame (FIN set) around ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def serve_picows(port: int) -> None:
    """picows, frame once + coalesced writes: every message read in one event-loop turn is
    framed once and the lot goes to each subscriber in one write."""
    try:
        import picows
        import uvloop
    except ImportError as exc:
        print(f"unavailable: {exc} (pip install picows)", flush=True)
        sys.exit(3)

    subs: dict[Any, Any] = {}
    pending: list[bytes] = []
    loop_box: list[asyncio.AbstractEventLoop] = []

    def flush() -> None:
        data = b"".join(pending)
        pending.clear()
        for raw in subs.values():
            raw.write(data)

    class Sub(picows.WSListener):
        def on_ws_connected(self, transport: Any) -> None:
            raw = transport.underlying_transport
            sock = raw.get_extra_info("socket")
            if sock is not None:  # as every other server here does: no Nagle delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            subs[transport] = raw

        def on_ws_disconnected(self, transport: Any) -> None:
            subs.pop(transport, None)

    class Pub(picows.WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type in (picows.WSMsgType.TEXT, picows.WSMsgType.BINARY):
                if not pending:
                    loop_box[0].call_soon(flush)
                pending.append(ws_server_frame(frame.get_payload_as_bytes()))
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    def factory(request: Any) -> Any:
        path = request.path if isinstance(request.path, str) else request.path.decode()
        return Pub() if path.startswith("/pub") else Sub()

    async def main() -> None:
        loop_box.append(asyncio.get_running_loop())
        server = await picows.ws_create_server(factory, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(main())
