"""The dashboard: static files (``index.html``, ES modules, CSS) served at ``/``.

Everything the page runs is in this folder and is served by this server: no build step, no
Node, no CDN. ``/`` is ``index.html`` (where the sign-in link ``sessionhub serve`` prints
lands); ``/dashboard/<path>`` serves the other files of this folder by suffix. A strict
Content-Security-Policy makes "nothing from elsewhere" a rule the browser enforces: scripts,
styles, images and connections may only come from this origin. The one inline script (it
takes the token out of the address bar before anything else runs) is allowed by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from ...core.errors import NotFound

HERE = Path(__file__).resolve().parent
INDEX = HERE / "index.html"
#: The suffixes served, with their media types; anything else here (Python files) is not.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def content_security_policy(html: str) -> str:
    """The policy for ``html``: this origin only, plus the hashes of its inline scripts.
    ``blob:`` images are the screen-share frames, decoded in the page."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.findall(html)
    )
    return (
        "default-src 'self'; "
        f"script-src 'self' {hashes}; "
        "style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


_HEADERS = {
    # The sign-in link carries a token: never send the address to another site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Revalidate each time (a 304 when unchanged), so an upgrade is seen at the next load.
    "Cache-Control": "no-cache",
}


@router.get("/")
async def index() -> HTMLResponse:
    html = INDEX.read_text(encoding="utf-8")
    headers = {**_HEADERS, "Content-Security-Policy": content_security_policy(html)}
    return HTMLResponse(html, headers=headers)


@router.get("/dashboard/{path:path}")
async def asset(path: str) -> FileResponse:
    file = (HERE / path).resolve()
    media_type = MEDIA_TYPES.get(file.suffix)
    if media_type is None or not file.is_relative_to(HERE) or not file.is_file():
        raise NotFound(f"no dashboard file {path!r}")
    return FileResponse(file, media_type=media_type, headers=_HEADERS)
