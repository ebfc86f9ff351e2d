"""Small builders shared by the agent's host tests."""
from __future__ import annotations

from rund.agent import AgentClient

PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def spec(args: list[str], hostname: str = "box", **process_extra) -> dict:
    """A minimal OCI runtime spec; the agent adds /proc, /dev and /sys."""
    process = {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": [PATH, "TERM=xterm"], **process_extra}
    return {"ociVersion": "1.0.2", "process": process, "hostname": hostname,
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}}


def process(args: list[str], **extra) -> dict:
    return {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": [PATH], **extra}


async def read_all(client: AgentClient, container_id: str, exec_id: str = "", stream: str = "stdout") -> bytes:
    read = client.read_stdout if stream == "stdout" else client.read_stderr
    out = bytearray()
    while True:
        chunk = await read(container_id, exec_id)
        out += chunk.data
        if chunk.eof:
            return bytes(out)


async def read_until(client: AgentClient, container_id: str, exec_id: str, marker: bytes) -> bytes:
    out = bytearray()
    while marker not in out:
        chunk = await client.read_stdout(container_id, exec_id)
        out += chunk.data
        if chunk.eof:
            break
    return bytes(out)
