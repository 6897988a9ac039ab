"""Real live sources for the watch tests: ffmpeg serving a clip in real time, and the watcher
as the `oceanstream watch` process, its JSON lines timed as they arrive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import ROOT, free_port


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class TcpStream:
    """`ffmpeg -re -i CLIP -c copy -f mpegts tcp://127.0.0.1:PORT?listen=1`: the clip's own
    packets, in real time, to the first client that connects."""

    def __init__(self, clip: Path, port: int | None = None) -> None:
        self.clip = clip
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> TcpStream:
        # Quiet: the watcher closing the connection at its end is a broken pipe here.
        command = [ffmpeg(), "-nostdin", "-loglevel", "quiet", "-re", "-i", str(self.clip)]
        command += ["-c", "copy", "-f", "mpegts", f"{self.url}?listen=1"]
        self.process = subprocess.Popen(command)
        return self

    def wait(self, timeout: float) -> float:
        """Wait for the stream to end; the time.time() it ended."""
        assert self.process is not None
        self.process.wait(timeout)
        return time.time()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class UdpStream:
    """`ffmpeg -re -i CLIP -c copy -f mpegts udp://127.0.0.1:PORT`: sent whether or not anyone
    listens, so the watcher binds the port first (`wait_bound`)."""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def start(self) -> UdpStream:
        command = [ffmpeg(), "-nostdin", "-loglevel", "quiet", "-re", "-i", str(self.clip)]
        command += ["-c", "copy", "-f", "mpegts", f"{self.url}?pkt_size=1316"]
        self.process = subprocess.Popen(command)
        return self

    def wait_bound(self, timeout: float) -> None:
        """Until a receiver has bound the port (the watcher opening the source)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = subprocess.run(
                ["ss", "-ulnH", f"( sport = :{self.port} )"], capture_output=True, text=True
            ).stdout
            if listening.strip():
                return
            time.sleep(0.2)
        raise AssertionError("the watcher never bound the UDP port")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class HlsStream:
    """A live HLS playlist: ffmpeg encoding the clip in a loop, in real time, into 1 s
    segments in a folder (the last six listed), served by `python -m http.server`."""

    def __init__(self, clip: Path, folder: Path) -> None:
        self.clip = clip
        self.folder = folder
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.m3u8"

    def start(self, timeout: float = 30) -> HlsStream:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [ffmpeg(), "-nostdin", "-loglevel", "quiet", "-re", "-stream_loop", "-1"]
        command += ["-i", str(self.clip), "-c:v", "libx264", "-preset", "ultrafast", "-g", "15"]
        command += ["-f", "hls", "-hls_time", "1", "-hls_list_size", "6"]
        command += ["-hls_flags", "delete_segments", str(self.folder / "live.m3u8")]
        self.processes.append(subprocess.Popen(command))
        server = [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"]
        self.processes.append(
            subprocess.Popen(
                [*server, "--directory", str(self.folder)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + timeout
        while not (self.folder / "live.m3u8").exists():
            if time.monotonic() > deadline:
                raise AssertionError("ffmpeg wrote no playlist")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@dataclass
class WatchProcess:
    """`oceanstream watch` running; its stdout lines (JSON) with the time each arrived."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, dict]] = field(default_factory=list)
    stderr: str = ""
    threads: list[threading.Thread] = field(default_factory=list)

    def follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.lines.append((time.time(), json.loads(line)))

    def wait_lines(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{len(self.lines)} of {count} segments reported")
            time.sleep(0.1)

    def read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def finish(self, timeout: float) -> int:
        self.process.wait(timeout)
        for thread in self.threads:
            thread.join(10)
        return self.process.returncode


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OCEANSTREAM_HOME": str(home),
        "OCEANSTREAM_SEGMENT_SECONDS": "2",
        "OCEANSTREAM_NUM_FRAMES": "8",
        "OCEANSTREAM_WATCH_RECONNECT_S": "2",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start_watch(env: dict[str, str], *args: str) -> WatchProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "watch", *args, "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = WatchProcess(process)
    for target in (watch.follow, watch.read_stderr):
        watch.threads.append(threading.Thread(target=target, daemon=True))
        watch.threads[-1].start()
    return watch


def wait_connected(stream: TcpStream, timeout: float) -> None:
    """Until the watcher is connected: ffmpeg's listening socket has accepted a client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ss", "-tnH", "state", "established", f"( sport = :{stream.port} )"],
            capture_output=True,
            text=True,
        ).stdout
        if out.strip():
            return
        time.sleep(0.2)
    raise AssertionError("the watcher never connected")
