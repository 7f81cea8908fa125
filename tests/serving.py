"""`ledger serve` as a real process, for end-to-end tests: started on a free port with its
output in a log file, ready once it answers, stopped with SIGTERM and required to exit 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """`ledger serve *args` with its output in `tmp_path/serve.log`."""
    with (tmp_path / "serve.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "jobledger.cli", "serve", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )


def wait_for_log(
    process: subprocess.Popen[bytes], log: Path, text: str, timeout: float = 30
) -> None:
    """Until `text` is in the log; fails at once if the process exits first."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log.read_text()}"
        time.sleep(0.1)


@dataclass
class Served:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serving(
    env: dict[str, str], tmp_path: Path, *args: str, ready_path: str = "/readyz"
) -> Iterator[Served]:
    """`ledger serve --port <free> *args`, once `ready_path` answers 200 (30 s at most). On
    leaving, SIGTERM; the process must exit 0 within 60 s (graceful shutdown)."""
    port = free_port()
    process = start_serve(env, tmp_path, "--port", str(port), *args)
    served = Served(f"http://127.0.0.1:{port}", tmp_path / "serve.log", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, served.log()
            try:
                if httpx.get(served.base_url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"ledger serve did not become ready:\n{served.log()}"
            )
            time.sleep(0.1)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, served.log()
