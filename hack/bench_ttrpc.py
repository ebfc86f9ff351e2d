"""Unary round trips per second over a unix socket: our ttrpc against grpc.aio, in the same run.

    python3 hack/bench_ttrpc.py [--rounds 5] [--concurrency 8] [--duration 2]

Each server runs in its own child process (both start before the first round and stay up); the
clients run here, one connection (channel) shared by --concurrency callers. Rounds alternate which
side goes first. The call is the agent's ReadStdout with a ~100-byte request and response, the same
serialized bytes for both. Prints a table, then as the last line one JSON object:
{"ttrpc_rps": N, "grpc_rps": N, "ratio": ttrpc_rps / grpc_rps} (medians over the rounds).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack.spec import print_aims  # noqa: E402
from proto.gen.rund.agent.v1 import agent_pb2  # noqa: E402

SERVICE = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
REQUEST = agent_pb2.ReadStreamRequest(container_id="c" * 64, exec_id="exec-0001", max_length=65536)
RESPONSE = agent_pb2.ReadStreamResponse(data=b"x" * 96, eof=False)


# -- servers (child processes) -----------------------------------------------------------------


class _Agent:
    async def ReadStdout(self, ctx: object, req: agent_pb2.ReadStreamRequest) -> agent_pb2.ReadStreamResponse:
        return RESPONSE


async def _serve_ttrpc(path: str) -> None:
    from proto import ttrpc

    server = ttrpc.Server()
    server.register_service(SERVICE, _Agent())
    await server.serve_unix(path)
    await _until_terminated()
    await server.shutdown(grace=1)


async def _serve_grpc(path: str) -> None:
    import grpc

    async def read_stdout(req: agent_pb2.ReadStreamRequest, context: object) -> agent_pb2.ReadStreamResponse:
        return RESPONSE

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        read_stdout,
        request_deserializer=agent_pb2.ReadStreamRequest.FromString,
        response_serializer=agent_pb2.ReadStreamResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, {"ReadStdout": handler}),))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    await _until_terminated()
    await server.stop(grace=1)


async def _until_terminated() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()


# -- clients (this process) ----------------------------------------------------------------------

Call = Callable[[], Awaitable[object]]


async def _ttrpc_client(path: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from proto import ttrpc

    client = await ttrpc.Client.connect_unix(path)
    stub = ttrpc.Stub(client, SERVICE)
    return (lambda: stub.ReadStdout(REQUEST)), client.close


async def _grpc_client(path: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import grpc

    channel = grpc.aio.insecure_channel(f"unix:{path}")
    await channel.channel_ready()
    method = channel.unary_unary(
        f"/{SERVICE.full_name}/ReadStdout",
        request_serializer=agent_pb2.ReadStreamRequest.SerializeToString,
        response_deserializer=agent_pb2.ReadStreamResponse.FromString,
    )
    return (lambda: method(REQUEST)), channel.close


async def _measure(call: Call, concurrency: int, duration: float) -> float:
    """Round trips per second with ``concurrency`` callers looping for ``duration`` seconds (after a warm-up)."""
    loop = asyncio.get_running_loop()
    deadline = 0.0
    counts = [0] * concurrency

    async def caller(i: int) -> None:
        n = 0
        while loop.time() < deadline:
            resp = await call()
            n += 1
        assert resp == RESPONSE, resp
        counts[i] = n

    deadline = loop.time() + min(0.5, duration / 4)  # warm-up
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    start = loop.time()
    deadline = start + duration
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return sum(counts) / (loop.time() - start)


async def _bench(paths: dict[str, str], rounds: int, concurrency: int, duration: float) -> dict[str, list[float]]:
    makers = {"ttrpc": _ttrpc_client, "grpc": _grpc_client}
    clients = {name: await makers[name](paths[name]) for name in makers}
    results: dict[str, list[float]] = {name: [] for name in makers}
    try:
        for r in range(rounds):
            order = ["ttrpc", "grpc"] if r % 2 == 0 else ["grpc", "ttrpc"]
            for name in order:
                rps = await _measure(clients[name][0], concurrency, duration)
                results[name].append(rps)
                print(f"  round {r + 1}/{rounds} {name:<5} {rps:10.0f} calls/s", file=sys.stderr, flush=True)
    finally:
        for _, close in clients.values():
            await close()
    return results


def _start_server(kind: str, path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--socket", path], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise SystemExit(f"{kind} server failed to start")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent callers per connection")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--serve", choices=["ttrpc", "grpc"], help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve_ttrpc(args.socket) if args.serve == "ttrpc" else _serve_grpc(args.socket))
        return

    tmp = tempfile.mkdtemp(prefix="bench-ttrpc-")
    paths = {"ttrpc": os.path.join(tmp, "ttrpc.sock"), "grpc": os.path.join(tmp, "grpc.sock")}
    servers: list[subprocess.Popen[str]] = []
    try:
        for kind in ("ttrpc", "grpc"):
            servers.append(_start_server(kind, paths[kind]))
        t0 = time.monotonic()
        results = asyncio.run(_bench(paths, args.rounds, args.concurrency, args.duration))
        elapsed = time.monotonic() - t0
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    medians = {name: statistics.median(v) for name, v in results.items()}
    print(f"unary round trips/s over a unix socket, {args.concurrency} concurrent callers on one connection, "
          f"{args.rounds} rounds x {args.duration:g}s ({elapsed:.0f}s total)")
    print(f"{'':8}{'median':>10}{'min':>10}{'max':>10}")
    for name in ("ttrpc", "grpc"):
        v = results[name]
        print(f"{name:8}{medians[name]:10.0f}{min(v):10.0f}{max(v):10.0f}")
    ratio = medians["ttrpc"] / medians["grpc"]
    print(f"ratio ttrpc/grpc: {ratio:.2f}")
    result = {"ttrpc_rps": round(medians["ttrpc"]), "grpc_rps": round(medians["grpc"]), "ratio": round(ratio, 3)}
    print_aims("ttrpc", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
