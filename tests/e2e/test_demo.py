"""`ledger demo --exit --json` as a real subprocess: the service starts on a fresh SQLite file,
the sandbox jobs reach their final states, their webhooks arrive signed, and afterwards the
child service is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

LEDGER = str(Path(sys.executable).parent / "ledger")

pytestmark = pytest.mark.slow


def test_demo_exit_json(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    done = subprocess.run(
        [LEDGER, "demo", "--exit", "--json", "--dir", str(data), "--timeout", "30"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    log = (data / "serve.log").read_text() if (data / "serve.log").exists() else ""
    assert done.returncode == 0, f"{done.stderr}\n--- serve.log ---\n{log}"
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert summary["all_verified"] is True
    assert summary["console_url"] == summary["base_url"] + "/ui/"
    assert summary["writer_key"].startswith("jlk_")
    assert (data / "ledger.db").exists()

    jobs = {job["name"]: job for job in summary["jobs"]}
    assert set(jobs) == {"published", "retried", "failed", "canceled"}
    assert (jobs["published"]["state"], jobs["published"]["attempts"]) == ("published", 1)
    assert (jobs["retried"]["state"], jobs["retried"]["attempts"]) == ("published", 2)
    assert jobs["failed"]["state"] == "failed_terminal"
    assert (jobs["canceled"]["state"], jobs["canceled"]["attempts"]) == ("canceled", 0)

    types = {name: [hook["type"] for hook in job["webhooks"]] for name, job in jobs.items()}
    assert types["published"][0] == "job.queued"
    assert types["published"][-1] == "job.published"
    assert "job.running" in types["published"]
    assert types["retried"][0] == "job.queued"
    assert types["retried"][-1] == "job.published"
    assert types["retried"].count("job.running") == 2
    assert types["retried"].index("job.retrying") < len(types["retried"]) - 1
    assert types["failed"][0] == "job.queued"
    assert types["failed"][-1] == "job.failed"
    assert types["canceled"] == ["job.queued", "job.scheduled", "job.canceled"]

    for job in jobs.values():
        versions = [hook["version"] for hook in job["webhooks"]]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        for hook in job["webhooks"]:
            assert hook["verified"] is True, hook
            assert hook["webhook_id"].startswith("msg_")

    # the child service is gone: nothing listens on its port any more
    port = urlsplit(summary["base_url"]).port
    assert port is not None
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    assert "stopped on signal SIGTERM" in log


def test_demo_reports_what_did_not_happen_in_time(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    done = subprocess.run(
        [LEDGER, "demo", "--exit", "--json", "--dir", str(data), "--timeout", "0.01"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "ledger demo failed:" in done.stderr
    assert "did not" in done.stderr
