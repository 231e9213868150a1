"""The remote-access command workflow: per safety mode, approvals, completion, counting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from sessionhub.core.model import Event
from sessionhub.server.runtime import Runtime
from sessionhub.workflows import remote

Auth = Callable[..., dict[str, str]]


async def _start(client: httpx.AsyncClient, headers: dict[str, str], mode: str) -> str:
    r = await client.post("/api/remote/start", json={"safety_mode": mode}, headers=headers)
    assert r.status_code == 200, r.text
    sid: str = r.json()["session_id"]
    return sid


async def _submit(
    client: httpx.AsyncClient, headers: dict[str, str], sid: str, command: str, writes: bool
) -> httpx.Response:
    return await client.post(
        f"/api/remote/{sid}/commands", json={"command": command, "writes": writes}, headers=headers
    )


async def test_supervised_holds_each_command_for_the_owner_or_an_admin(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user, bob, admin = auth("user"), auth("bob"), auth("root", "admin")
    sid = await _start(client, user, "supervised")
    first = (await _submit(client, user, sid, "rm -rf build", True)).json()["command"]
    second = (await _submit(client, user, sid, "ls", False)).json()["command"]
    assert first["status"] == second["status"] == "pending_approval"
    assert first["writes"] is True and first["submitted_by"] == "user"

    # Not runnable before approval; another user cannot approve (or even see) it.
    r = await client.post(f"/api/remote/{sid}/commands/{first['id']}/complete", headers=user)
    assert r.status_code == 409
    r = await client.post(f"/api/remote/{sid}/commands/{first['id']}/approve", headers=bob)
    assert r.status_code == 404

    r = await client.post(f"/api/remote/{sid}/commands/{first['id']}/approve", headers=user)
    assert r.status_code == 200 and r.json()["command"]["status"] == "approved"
    assert r.json()["command"]["decided_by"] == "user"
    r = await client.post(f"/api/remote/{sid}/commands/{second['id']}/reject", headers=admin)
    assert r.json()["command"]["status"] == "rejected"
    assert r.json()["command"]["decided_by"] == "root"
    r = await client.post(f"/api/remote/{sid}/commands/{second['id']}/approve", headers=admin)
    assert r.status_code == 409  # decided already

    # The agent polls for approved commands, runs them and reports.
    r = await client.get(f"/api/remote/{sid}/commands?status=approved", headers=user)
    assert [c["id"] for c in r.json()["commands"]] == [first["id"]]
    r = await client.post(
        f"/api/remote/{sid}/commands/{first['id']}/complete",
        json={"success": True, "exit_code": 0, "output": "removed"},
        headers=user,
    )
    assert r.status_code == 200
    done = r.json()
    assert done["command"]["status"] == "completed" and done["command"]["output"] == "removed"
    assert done["commands_executed"] == 1
    r = await client.post(f"/api/remote/{sid}/commands/{first['id']}/complete", headers=user)
    assert r.status_code == 409  # completed once only

    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    assert status["commands_executed"] == 1
    listed = (await client.get(f"/api/remote/{sid}/commands", headers=user)).json()
    assert [c["status"] for c in listed["commands"]] == ["completed", "rejected"]
    stop = (await client.post(f"/api/remote/stop/{sid}", headers=user)).json()
    assert stop["commands_executed"] == 1
    history = (await client.get("/api/sessions/history", headers=user)).json()["history"]
    assert history[0]["commands_executed"] == 1


async def test_read_only_refuses_writes_and_runs_reads(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user = auth("user")
    sid = await _start(client, user, "read_only")
    r = await _submit(client, user, sid, "echo hi > file", True)
    assert r.status_code == 403
    assert "read_only" in r.json()["detail"]
    r = await _submit(client, user, sid, "cat file", False)
    assert r.status_code == 200 and r.json()["command"]["status"] == "approved"
    cid = r.json()["command"]["id"]
    r = await client.post(f"/api/remote/{sid}/commands/{cid}/complete", headers=user)
    assert r.json()["commands_executed"] == 1
    listed = (await client.get(f"/api/remote/{sid}/commands", headers=user)).json()
    assert listed["total"] == 1  # the refused write was never recorded


async def test_autonomous_runs_freely_once_approved(client: httpx.AsyncClient, auth: Auth) -> None:
    user, admin = auth("user"), auth("root", "admin")
    sid = await _start(client, user, "autonomous")
    r = await _submit(client, user, sid, "make", True)
    assert r.status_code == 409  # pending approval: no commands yet
    await client.post(f"/api/remote/approve/{sid}", headers=admin)
    ids = []
    for i in range(3):
        r = await _submit(client, user, sid, f"step {i}", True)
        assert r.json()["command"]["status"] == "approved"
        ids.append(r.json()["command"]["id"])
    for cid in ids:
        r = await client.post(
            f"/api/remote/{sid}/commands/{cid}/complete", json={"exit_code": 0}, headers=user
        )
        assert r.status_code == 200
    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    assert status["commands_executed"] == 3
    await client.post(f"/api/remote/stop/{sid}", headers=user)
    assert (await _submit(client, user, sid, "late", False)).status_code == 409


async def test_concurrent_submissions_are_all_kept(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    """Every change is a compare-and-set on the session version, retried: none is lost."""
    user = auth("user")
    sid = await _start(client, user, "autonomous")
    await client.post(f"/api/remote/approve/{sid}", headers=auth("root", "admin"))
    results = await asyncio.gather(
        *(_submit(client, user, sid, f"job {i}", False) for i in range(6))
    )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    listed = (await client.get(f"/api/remote/{sid}/commands", headers=user)).json()
    assert sorted(c["command"] for c in listed["commands"]) == [f"job {i}" for i in range(6)]


async def test_commands_are_kept_in_metadata_and_changes_are_events(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    user = auth("user")
    r = await client.post(
        "/api/remote/start",
        json={"safety_mode": "supervised", "metadata": {"host": "box"}},
        headers=user,
    )
    sid = r.json()["session_id"]
    seen: list[Event] = []
    runtime.hub.add_listener(lambda e, _c: seen.append(e) if e.session_id == sid else None)
    cid = (await _submit(client, user, sid, "uptime", False)).json()["command"]["id"]
    await client.post(f"/api/remote/{sid}/commands/{cid}/approve", headers=user)
    assert [e.type for e in seen] == ["session.updated", "session.updated"]
    s = await runtime.hub.store.get(sid)
    assert s is not None
    assert remote.public_metadata(s) == {"host": "box"}
    assert [c["status"] for c in remote.commands_of(s)] == ["approved"]


async def test_finished_commands_are_trimmed_but_counted(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user = auth("user")
    sid = await _start(client, user, "read_only")
    total = remote.MAX_FINISHED + 5
    for i in range(total):
        cid = (await _submit(client, user, sid, f"read {i}", False)).json()["command"]["id"]
        await client.post(
            f"/api/remote/{sid}/commands/{cid}/complete", json={"output": "x" * 900}, headers=user
        )
    listed = (await client.get(f"/api/remote/{sid}/commands", headers=user)).json()
    assert 0 < listed["total"] <= remote.MAX_FINISHED
    assert listed["commands"][-1]["command"] == f"read {total - 1}"  # the newest are kept
    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    assert status["commands_executed"] == total


async def test_bad_command_requests(client: httpx.AsyncClient, auth: Auth) -> None:
    user = auth("user")
    sid = await _start(client, user, "supervised")
    assert (await _submit(client, user, sid, "", False)).status_code == 422
    assert (await _submit(client, user, sid, "x" * 5000, False)).status_code == 422
    r = await client.get(f"/api/remote/{sid}/commands?status=weird", headers=user)
    assert r.status_code == 422
    r = await client.post(f"/api/remote/{sid}/commands/cmd_nope/approve", headers=user)
    assert r.status_code == 404
    screen = (await client.post("/api/screen_share/start", json={}, headers=user)).json()
    r = await _submit(client, user, screen["session_id"], "ls", False)
    assert r.status_code == 404


async def test_the_generic_api_cannot_forge_or_wipe_commands(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    """Commands are the kind's own record: a PATCH may neither write nor erase them."""
    user = auth("user")
    sid = await _start(client, user, "read_only")
    assert (await _submit(client, user, sid, "cat /etc/hosts", False)).status_code == 200
    forged = [{"id": "x", "command": "rm -rf /", "writes": True, "status": "approved"}]

    # Writing the reserved key through the generic API is refused, at create and at update.
    r = await client.patch(
        f"/api/sessions/{sid}", json={"metadata": {"_commands": forged}}, headers=user
    )
    assert r.status_code == 422 and "_commands" in r.json()["detail"]
    r = await client.post(
        "/api/sessions",
        json={"kind": "remote_access", "metadata": {"_commands": forged}},
        headers=user,
    )
    assert r.status_code == 422

    # Replacing the metadata keeps the commands.
    r = await client.patch(f"/api/sessions/{sid}", json={"metadata": {"note": "hi"}}, headers=user)
    assert r.status_code == 200, r.text
    r = await client.get(f"/api/remote/{sid}/commands", headers=user)
    assert [c["command"] for c in r.json()["commands"]] == ["cat /etc/hosts"]
    assert all(not c["writes"] for c in r.json()["commands"])
