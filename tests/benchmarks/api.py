"""Benchmark: uploads through the HTTP API against `oceanstream submit`, and result reads.

    python -m tests.benchmarks.api [--clips 100] [--clients 50] [--reads 40] [--reads-only]
        [--workers 2] [--variants none,rate,keys,stamps,cache,none@304] [--rounds 2]

One small talking-head clip (1.5 s, 320x240) is copied into N files with distinct bytes (a
counter appended), so content-hash de-duplication does not collapse them. On a fresh
PostgreSQL database and a redis-server of its own, it times:

1. `oceanstream submit FOLDER` (one process: start-up, hashing, copying into storage,
   registering, queueing), as a user would run it;
2. the API (`oceanstream serve`, one process), one file per `POST /v1/jobs`, from 1 client
   and from 8 concurrent clients, and all N files in one request; each mode as a tenant of
   its own, so none de-duplicates another's files.

No worker runs: both paths stop at queueing, which is what they share. Then a clip is
analysed (`oceanstream analyze`, the default tenant) and, for each variant in turn (`--rounds`
times), a fresh `serve --workers N` answers `--clients` concurrent clients reading its stored
result (`GET /v1/videos/{id}`) `--reads` times each, after a warm-up: reads per second, its
ratio to the round's first variant, p50/p99 latency and the API's CPU per read (all its
processes). A variant names the read-path mechanisms switched off
(`OCEANSTREAM_API_READ_PATH_OFF`: `rate`, `keys`, `stamps`, `cache`, joined by `+`; `none`),
and `@304` makes its clients revalidate with the result's ETag. Clients and server share the
machine's cores. `--reads-only` leaves out the API uploads (2); `submit` still stores the N
videos the reads run among.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.api import ApiServer, create_key
from tests.support.cluster import Cluster
from tests.support.postgres import POSTGRES_URL, open_postgres
from tests.support.redis import RedisServer


def make_clips(folder: Path, count: int) -> list[Path]:
    from tests.clips import write_talking_head

    source = write_talking_head(folder / "source.mp4", seconds=1.5, seed=3)
    data = source.read_bytes()
    clips = []
    for i in range(count):
        clip = folder / "clips" / f"clip_{i:03d}.mp4"
        clip.parent.mkdir(exist_ok=True)
        clip.write_bytes(data + f"copy {i}".encode())
        clips.append(clip)
    return clips


def upload_each(api: ApiServer, key: str, clips: list[Path], clients: int) -> float:
    def send(clip: Path) -> None:
        with api.client(key) as client:
            answer = client.post(
                "/v1/jobs", files=[("files", (clip.name, clip.read_bytes(), "video/mp4"))]
            )
            assert answer.status_code == 202, answer.text

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, clips))
    return time.perf_counter() - start


def upload_at_once(api: ApiServer, key: str, clips: list[Path]) -> float:
    files = [("files", (clip.name, clip.read_bytes(), "video/mp4")) for clip in clips]
    start = time.perf_counter()
    with api.client(key, timeout=300) as client:
        answer = client.post("/v1/jobs", files=files)
    assert answer.status_code == 202, answer.text
    return time.perf_counter() - start


async def read_concurrently(
    url: str, key: str, path: str, clients: int, reads: int, client: str = "raw", etag: str = ""
) -> list[float]:
    """Latencies of `clients` concurrent clients reading `path` `reads` times each, one
    keep-alive connection each, after one warm-up read each. With `etag` (raw clients only)
    each read revalidates (`If-None-Match`) and must be answered 304."""
    read = _raw_reader if client == "raw" else _httpx_reader
    async with read(url, key, path, clients, etag) as get:
        await asyncio.gather(*(get(i) for i in range(clients)))  # warm-up
        latencies: list[float] = []

        async def one_client(i: int) -> None:
            for _ in range(reads):
                start = time.perf_counter()
                await get(i)
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return latencies


Reader = Callable[[int], Awaitable[None]]


@asynccontextmanager
async def _httpx_reader(
    url: str, key: str, path: str, clients: int, etag: str = ""
) -> AsyncIterator[Reader]:
    """httpx's AsyncClient with a pool of `clients` connections: about 6 ms of CPU per read
    on the development host, twice the API's own, so it measures itself as much as the API."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:

        async def get(i: int) -> None:
            answer = await client.get(path)
            assert answer.status_code == 200, answer.text

        yield get


@asynccontextmanager
async def _raw_reader(
    url: str, key: str, path: str, clients: int, etag: str = ""
) -> AsyncIterator[Reader]:
    """A bare HTTP/1.1 client: connection `i` sends the GET and reads the answer (status line,
    headers, Content-Length bytes); a tenth of httpx's CPU per read."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    revalidate = f"If-None-Match: {etag}\r\n" if etag else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"{revalidate}\r\n"
    ).encode()
    expected = b"304" if etag else b"200"
    connections = [await asyncio.open_connection(host, port) for _ in range(clients)]

    async def get(i: int) -> None:
        reader, writer = connections[i]
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        body = await reader.readexactly(length)
        assert status == expected, head + body

    try:
        yield get
    finally:
        for _, writer in connections:
            writer.close()


@dataclass
class ReadRun:
    variant: str
    reads_per_s: float
    p50_ms: float
    p99_ms: float
    api_cpu_ms: float  # per read, warm-up included, all the API's processes


def read_variant(
    cluster: Cluster, args: argparse.Namespace, reader: str, video_id: str, variant: str
) -> ReadRun:
    """One read run against a fresh `serve --workers N` with `variant`'s mechanisms off
    (`off1+off2`, `none`) and, with a `@304` suffix, clients that revalidate."""
    off, _, mode = variant.partition("@")
    api = ApiServer(
        cluster,
        extra_env={
            "OCEANSTREAM_API_READ_PATH_OFF": json.dumps([] if off == "none" else off.split("+"))
        },
        workers=args.workers,
    )
    api.start()
    path = f"/v1/videos/{video_id}"
    try:
        etag = ""
        if mode == "304":
            with api.client(reader) as client:
                etag = client.get(path).headers["etag"]
        server_cpu = api.cpu_seconds()
        try:
            latencies = asyncio.run(
                read_concurrently(
                    api.url, reader, path, args.clients, args.reads, args.client, etag
                )
            )
        except (httpx.HTTPError, OSError, EOFError, AssertionError):
            print(api.log_path.read_text()[-4000:])
            raise
        server_cpu = api.cpu_seconds() - server_cpu
    finally:
        api.stop()
    read_s = sum(latencies) / args.clients
    ordered = sorted(latencies)
    return ReadRun(
        variant,
        len(latencies) / read_s,
        statistics.median(ordered) * 1000,
        ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        server_cpu / (args.clients * (args.reads + 1)) * 1000,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--reads-only", action="store_true", help="leave out the API uploads")
    parser.add_argument("--workers", type=int, default=1, help="API processes (serve --workers)")
    parser.add_argument(
        "--variants",
        default="none",
        help="comma-separated read runs, each with the read-path mechanisms named switched "
        "off ('rate+keys+cache'; 'none' for none) and '@304' for clients sending If-None-Match",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each variant runs, in turn")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="the reading clients: a bare HTTP/1.1 client (default) or httpx's AsyncClient",
    )
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    runs: list[ReadRun] = []
    databases = open_postgres(POSTGRES_URL)
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips)
        size_kib = clips[0].stat().st_size / 1024
        home = folder / "home"
        home.mkdir()
        with RedisServer(folder) as redis_server:
            cluster = Cluster(
                home=home,
                database_url=databases.create("bench").render_as_string(hide_password=False),
                broker_url=redis_server.url,
                extra_env={"OCEANSTREAM_API_RATE_LIMIT": "100000000"},
            )
            try:
                assert cluster.cli("db", "upgrade").returncode == 0
                start = time.perf_counter()
                submitted = cluster.cli("submit", str(folder / "clips"))
                submit_s = time.perf_counter() - start
                assert submitted.returncode == 0, submitted.stderr
                if not args.reads_only:
                    api = ApiServer(cluster)
                    api.start()
                    try:
                        keys = {
                            name: create_key(cluster, name) for name in ("one", "eight", "batch")
                        }
                        one_s = upload_each(api, keys["one"], clips, clients=1)
                        eight_s = upload_each(api, keys["eight"], clips, clients=8)
                        batch_s = upload_at_once(api, keys["batch"], clips)
                    finally:
                        api.stop()
                analysed = cluster.cli("analyze", str(clips[0]), "--json")
                assert analysed.returncode == 0, analysed.stderr
                (video_id,) = cluster.query(
                    "SELECT id FROM videos WHERE tenant_id = 'default' AND status = 'done'"
                )[0]
                reader = create_key(cluster, "default")
                for _ in range(args.rounds):
                    for variant in variants:
                        runs.append(read_variant(cluster, args, reader, video_id, variant))
            finally:
                databases.drop_all()
    n = args.clips
    print(f"{n} clips of {size_kib:.0f} KiB each")
    print(
        f"oceanstream submit FOLDER:             {n / submit_s:7.1f} uploads/s ({submit_s:.2f} s)"
    )
    if not args.reads_only:
        print(f"API, one file per request, 1 client:   {n / one_s:7.1f} uploads/s ({one_s:.2f} s)")
        print(
            f"API, one file per request, 8 clients:  {n / eight_s:7.1f} uploads/s ({eight_s:.2f} s)"
        )
        print(
            f"API, all files in one request:         {n / batch_s:7.1f} uploads/s ({batch_s:.2f} s)"
        )
    print(
        f"GET /v1/videos/{{id}}, {args.clients} clients x {args.reads} ({args.client}), "
        f"{args.workers} API process(es); ratio: reads/s over the round's first variant"
    )
    print("round | mechanisms off | reads/s | ratio | p50 ms | p99 ms | API CPU ms/read")
    for i, run in enumerate(runs):
        first = runs[i - i % len(variants)]
        print(
            f"{i // len(variants) + 1} | {run.variant} | {run.reads_per_s:.1f} | "
            f"{run.reads_per_s / first.reads_per_s:.2f} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | "
            f"{run.api_cpu_ms:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
