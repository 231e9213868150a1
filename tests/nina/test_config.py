"""The connector's settings: rigs, zone, precedence of ``extra`` over the environment."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from sessionhub.connectors.nina.config import NinaConfig, RigConfig, parse_rigs
from sessionhub.connectors.nina.service import NinaService
from sessionhub.server.runtime import Runtime

from .harness import with_imaging


def test_rigs_from_a_url_or_a_list() -> None:
    assert parse_rigs("http://192.168.1.20:1888/") == (
        RigConfig("192.168.1.20", "http://192.168.1.20:1888"),
    )
    rigs = parse_rigs("north=http://a:1888, south=https://b.local:1888")
    assert [r.name for r in rigs] == ["north", "south"]
    assert rigs[0].socket_url == "ws://a:1888/v2/socket"
    assert rigs[1].socket_url == "wss://b.local:1888/v2/socket"
    assert rigs[0].source == "nina:north"
    for bad in ("ftp://x", "north=http://a,north=http://b", "bad name=http://a", "="):
        with pytest.raises(ValueError):
            parse_rigs(bad)


def test_environment_and_extra() -> None:
    assert NinaConfig.load({}, {}) is None
    env = {"SESSIONHUB_NINA_URL": "r=http://a:1888", "SESSIONHUB_NINA_TIMEZONE": "Europe/Berlin",
           "SESSIONHUB_NINA_RAW_RETENTION": "10", "SESSIONHUB_NINA_ALLOW_ANONYMOUS": "yes"}  # fmt: skip
    cfg = NinaConfig.load(env, {"nina_raw_retention": 5})
    assert cfg is not None
    assert cfg.zone == ZoneInfo("Europe/Berlin")
    assert cfg.raw_retention == 5 and cfg.allow_anonymous is True
    with pytest.raises(ValueError, match="TIMEZONE"):
        NinaConfig.load({**env, "SESSIONHUB_NINA_TIMEZONE": "Mars/Olympus"}, {})
    with pytest.raises(ValueError, match="BACKOFF_INITIAL"):
        NinaConfig.load({**env, "SESSIONHUB_NINA_BACKOFF_INITIAL": "0"}, {})
    with pytest.raises(ValueError, match="bad value"):
        NinaConfig.load({**env, "SESSIONHUB_NINA_DEDUPE_WINDOW": "soon"}, {})


def test_from_env(runtime: Runtime) -> None:
    with_imaging(runtime)
    assert NinaService.from_env(runtime.hub, {}, {}) is None
    service = NinaService.from_env(runtime.hub, {}, {"nina_url": "a=http://x:1,b=http://y:1"})
    assert service is not None and service.rigs == ("a", "b")
    assert not service.running and service.health()["rigs"]["b"]["connected"] is False
