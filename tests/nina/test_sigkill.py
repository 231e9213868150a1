"""A sessionhub process killed with SIGKILL mid-night: the next one takes the night up from
the store, and its re-seed from the rig's history counts nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from sessionhub.connectors.nina.service import NinaService
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.server.runtime import build_runtime
from sessionhub.settings import Settings

from .harness import RIG, SMALL, TZ, nina_config, truth, with_imaging

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from sessionhub.connectors.nina.service import NinaService
    from sessionhub.kinds.imaging import Imaging
    from sessionhub.kinds.registry import Registry
    from sessionhub.server.runtime import build_runtime
    from sessionhub.settings import Settings

    async def main(data_dir, url):
        runtime = build_runtime(Settings(data_dir=Path(data_dir), jwt_secret="s" * 32,
                                         sweep_interval=3600.0))
        if "imaging" not in runtime.hub.kinds:
            runtime.hub.kinds = Registry([*runtime.hub.kinds.values(), Imaging()])
        config = {"nina_url": "nightsky=" + url, "nina_timezone": "America/Chicago",
                  "nina_backoff_initial": 0.02, "nina_backoff_max": 0.1}
        await runtime.start()
        service = NinaService.from_env(runtime.hub, {}, config)
        def pushed(pub):
            message = json.loads(pub.data)
            if message["type"] == "unifiedSession":
                print(json.dumps(message["data"]["images_by_type"]), flush=True)
        runtime.hub.broker.subscribe("nina:nightsky", pushed)
        await service.start()
        print("started", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
async def test_sigkill_mid_night_then_restart(tmp_path: Path) -> None:
    sim = NinaSimulator(plan=SMALL, seed=7, timezone=TZ, speed=0)
    await sim.start()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    data_dir = tmp_path / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(data_dir), sim.url,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).strip() == b"started"
            await sim.wait_clients(1)
            lights = 0
            while lights < 4:  # play until the child has pushed four lights
                await sim.play(1)
                if sim.script[sim.position - 1].event == "IMAGE-SAVE":
                    while True:
                        line = json.loads(await proc.stdout.readline())
                        if line.get("LIGHT", 0) > lights:
                            lights = line["LIGHT"]
                            break
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        # The rig keeps working while no sessionhub runs.
        await sim.play(sim.remaining // 2)
        runtime = build_runtime(
            Settings(data_dir=data_dir, jwt_secret="s" * 32, sweep_interval=3600.0)
        )
        with_imaging(runtime)
        await runtime.start()
        service = NinaService(runtime.hub, nina_config(sim.url))
        try:
            await service.start()
            restored = await service.state(RIG)
            assert restored["images_by_type"].get("LIGHT") == 4
            runner = service.runner(RIG)
            await runner.wait_for(lambda r: r.status.connected and r.idle, 10)
            await sim.play()
            done = truth(sim.script)["images_by_type"]
            await runner.wait_for(
                lambda r: r.session is not None and r.session.state == "finished" and r.idle, 10
            )
            final = await service.state(RIG)
            assert final["images_by_type"] == done
            assert final["session_id"] == restored["session_id"]
        finally:
            await service.close()
            await runtime.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.close()
