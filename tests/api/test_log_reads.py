"""Log reads wait on the nodes' log store in threads of their own (api/routes_jobs.py LOG_READS): on
PostgreSQL every store call goes to anyio's default threads too (api/db.py), and reads whose store hangs
must not take them all."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from overcast.api import routes_jobs
from overcast.api.app import create_app
from overcast.store import Store
from tests.backends.test_aws import gpu_job

WAIT_S = 30.0  # the bound of every wait here; none is meant to take it
READS = 40  # anyio's default limiter: as many threads as these reads would take


class Hung:
    """A controller whose log reads wait on a store that does not answer (until released)."""

    def __init__(self) -> None:
        self.release, self.reading = threading.Event(), 0

    def log_path(self, job_id: str, attempt: int, rank: int, follow: bool = False) -> Path | None:
        self.reading += 1
        self.release.wait(WAIT_S)
        return None


def waiting() -> int:
    """Log reads waiting for a thread of their own (none before the fix: it had no limiter)."""
    limiter = getattr(routes_jobs, "LOG_READS", None)
    return limiter.statistics().tasks_waiting if limiter is not None else 0


def test_log_reads_whose_store_hangs_leave_the_api_its_threads(postgres_url: str) -> None:
    store = Store(postgres_url)
    token = store.create_team("ml")
    job = store.submit("ml", gpu_job("j", "true", nodes=1))
    hung = Hung()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, hung), port=port, log_level="error"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}/v1/jobs/{job.id}"
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        for rank in range(READS):
            read = f"{url}/logs?attempt=1&rank={rank}"
            threading.Thread(target=httpx.get, args=(read,), kwargs=dict(headers=headers, timeout=WAIT_S),
                             daemon=True).start()  # fmt: skip
        while hung.reading + waiting() < READS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hung.reading + waiting() == READS  # all in: reading, or waiting for a thread
        assert httpx.get(url, headers=headers, timeout=WAIT_S / 3).status_code == 200
    finally:
        hung.release.set()
        server.should_exit = True
        serving.join(WAIT_S)
        store.close()
