"""A replica for probe tests, run by the local backend: ``health_replica.py DIR``.

Every request is a probe: it appends a line to ``DIR/hits``. While ``DIR/sick`` exists it answers 500; if
``DIR/slow`` exists it removes it and answers 3 s late (one busy moment, not a dead replica)."""

from __future__ import annotations

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DIR = Path(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        with open(DIR / "hits", "a") as hits:
            hits.write("probe\n")
        slow = DIR / "slow"
        if slow.exists():
            slow.unlink()
            time.sleep(3)
        code = 500 if (DIR / "sick").exists() else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


# OVERCAST_REPLICA_HOST: the node's own address where it is not 127.0.0.1 (tests/slurm/test_serve_slurm.py)
HOST = os.environ.get("OVERCAST_REPLICA_HOST", "127.0.0.1")
ThreadingHTTPServer((HOST, int(os.environ["OVERCAST_REPLICA_PORT"])), Handler).serve_forever()
