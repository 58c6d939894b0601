"""The server's side of cloud logs (backends/cloud_log_copies.py LogCopies, CloudBackend.log_path, the
controller's and the API's reads, the fleet file's ``logs_url``) when things go wrong: a full disk, a
crash, a store that hangs, a long log, a follow before the first output, an old attempt."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec
import pytest
from fastapi.testclient import TestClient

from overcast.api.app import create_app
from overcast.backends import cloud_log_copies, cloud_logs
from overcast.backends.aws import AwsBackend
from overcast.backends.base import EventKind, LaunchRequest
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.cloud_log_copies import LogCopies
from overcast.backends.cloud_logs import log_dir, part_name
from overcast.catalog.fleet import parse_fleet
from overcast.control.controller import LoopController
from overcast.placement.pool import Purchase
from overcast.store import JobState, Store
from overcast.store.records import LaunchTerms
from tests.backends.aws_vm import VmEmulator
from tests.backends.cloud_checks import eventually, fast_loop, wait_events
from tests.backends.test_aws import gpu_job, pool_of, settings, vms  # noqa: F401 (vms: a fixture)
from tests.backends.test_cloud_logs_agent import Hang, hang  # noqa: F401 (hang: a fixture)
from tests.control.harness import run_until, state
from tests.fixtures.moto import REGION, MotoEC2, moto_ec2, moto_server  # noqa: F401 (fixtures)


def uploaded(tmp_path: Path, texts: list[bytes]) -> tuple[LogCopies, Path, str]:
    """A store holding ``texts`` as parts of j/1/node-0, and the copies of the server."""
    folder = tmp_path / "bucket" / "j" / "1" / "node-0"
    folder.mkdir(parents=True)
    for n, text in enumerate(texts):
        (folder / part_name(n)).write_bytes(text)
    copies = LogCopies(f"file://{tmp_path / 'bucket'}", tmp_path / "home", print)
    return copies, copies.local("j", 1, 0), log_dir(f"file://{tmp_path / 'bucket'}", "j", 1, 0)


def test_a_full_disk_or_a_crash_never_copies_a_part_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies, local, remote = uploaded(tmp_path, [b"a\n", b"b\n"])
    copies.sync(local, remote, force=True)
    assert local.read_bytes() == b"a\nb\n"
    real = Path.write_text

    def full(self: Path, *args: Any, **kw: Any) -> int:  # the disk fills as the count is written
        self.open("w").close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    (remote_dir := Path(remote.removeprefix("file://"))).joinpath(part_name(2)).write_bytes(b"c\n")
    copies.sync(local, remote, force=True)  # appends c, then counting it fails
    monkeypatch.setattr(Path, "write_text", real)
    copies.sync(local, remote, force=True)  # space is back
    assert local.read_bytes() == b"a\nb\nc\n"
    with local.open("ab") as fh:  # the server died between appending a part and counting it
        fh.write(b"d\n")
    (remote_dir / part_name(3)).write_bytes(b"d\n")
    copies.sync(local, remote, force=True)
    assert local.read_bytes() == b"a\nb\nc\nd\n"


def test_a_sync_copies_a_bounded_number_of_parts_and_a_read_the_rest_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_log_copies, "PARTS_PER_SYNC", 3)
    texts = [b"step %d\n" % n for n in range(8)]
    copies, local, remote = uploaded(tmp_path, texts)
    assert copies.sync(local, remote, force=True) is True  # more to come
    assert local.read_bytes() == b"".join(texts[:3])
    reader = LogCopies(copies.url, tmp_path / "home2", print)  # a read: 3 parts now, the rest soon
    path = reader.path("j", 1, 0)
    assert path is not None and path.read_bytes().startswith(b"".join(texts[:3]))
    assert eventually(lambda: path.read_bytes() == b"".join(texts) and not reader._followed)


def test_an_attempt_s_end_waits_a_bounded_time_for_a_store_that_hangs(
    tmp_path: Path,
    hang: type[Hang],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cloud_log_copies, "SETTLE_WAIT_S", 0.1)
    monkeypatch.setattr(cloud_log_copies, "LOCK_WAIT_S", 0.1)
    warned: list[str] = []
    copies = LogCopies("hang://bucket", tmp_path / "home", warned.append)
    running = [True]
    copies.follow("j", 1, 0, lambda: not running[0])
    settle = threading.Thread(target=copies.settle, args=([("j", 1)],), daemon=True)
    settle.start()
    settle.join(10)
    assert not settle.is_alive() and hang.entered.is_set()  # it did ask the store, which hangs
    assert warned == ["log copy from hang://bucket: the store is slow; the last parts come later"]
    read = threading.Thread(target=copies.path, args=("j", 1, 0), daemon=True)  # the sync hangs still
    read.start()
    read.join(10)
    assert not read.is_alive()
    running[0] = False  # the follow ends (once the store answers)


def test_a_read_s_background_copy_goes_on_as_a_follow_once_the_running_attempt_is_read(
    tmp_path: Path,
    hang: type[Hang],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cloud_log_copies, "SYNC_EVERY_S", 0.01)
    copies = LogCopies("hang://bucket", tmp_path / "home", print)
    local = copies.follow("f", 1, 0, None)  # a read's catch-up of a long log, stuck on the store
    assert eventually(hang.entered.is_set)
    running = [True]
    copies.follow("f", 1, 0, lambda: not running[0])  # then a read (a follow) of the running attempt
    hang.release.set()
    fsspec.filesystem("hang").pipe_file("hang://bucket/f/1/node-0/part-00000000", b"later\n")
    assert eventually(lambda: local.read_bytes() == b"later\n")  # printed after the catch-up had caught up
    running[0] = False
    assert eventually(lambda: not copies._followed)


def test_the_poll_settles_the_logs_outside_the_backend_s_lock(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = AwsBackend(settings(moto_ec2, logs_url=f"file://{tmp_path / 'bucket'}"), home=tmp_path)
    assert backend._logs is not None
    free: list[tuple[list[tuple[str, int]], bool]] = []

    def settle(attempts: list[tuple[str, int]]) -> None:  # can another thread take the lock meanwhile?
        got: list[bool] = []

        def other() -> None:
            got.append(backend._lock.acquire(timeout=5))
            if got[0]:
                backend._lock.release()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        free.append((attempts, got == [True]))

    backend._logs.settle = settle  # type: ignore[method-assign]
    pool = pool_of(backend, "use1-az2", Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("q", 1, pool, 1, gpu_job("q", "echo hi", nodes=1)))
    events = wait_events(backend, lambda es: any(e.kind is EventKind.SUCCEEDED for e in es))
    assert EventKind.SUCCEEDED in [e.kind for e in events]
    assert free == [([("q", 1)], True)]


def test_a_follow_right_after_the_start_waits_for_the_first_output(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("overcast.backends.cloud_agent.UPLOAD_EVERY_S", 0.2)
    monkeypatch.setattr(cloud_log_copies, "SYNC_EVERY_S", 0.1)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    go = tmp_path / "go"
    backend = AwsBackend(settings(moto_ec2, logs_url=f"file://{tmp_path / 'bucket'}"), home=tmp_path)
    loop = fast_loop(tmp_path, store, backend)
    token = store.create_team("ml")
    record = store.submit("ml", gpu_job("quiet", f"until [ -e {go} ]; do sleep 0.05; done; echo hi", nodes=1))
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)  # what `logs -f` waits for
    followed: list[tuple[int, str]] = []
    with TestClient(create_app(store, LoopController(loop))) as client:

        def follow() -> None:
            resp = client.get(
                f"/v1/jobs/{record.id}/logs?follow=true", headers={"Authorization": f"Bearer {token}"}
            )
            followed.append((resp.status_code, resp.text))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        copies = backend._logs
        assert copies is not None and eventually(lambda: bool(copies._followed) or bool(followed))
        assert not followed  # no 404: it waits for the output
        go.touch()
        run_until(loop, lambda: state(store, record.id).state.terminal)
        follower.join(timeout=20)
    assert followed == [(200, "hi\n")]


class Probe:
    """A controller whose log_path says whether it ran on the event loop, and whether to follow."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.on_loop: list[bool] = []
        self.follow: list[bool] = []

    def log_path(self, job_id: str, attempt: int, rank: int, follow: bool = False) -> Path:
        self.follow.append(follow)
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return self.path


def test_the_api_reads_a_log_off_the_event_loop(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    token = store.create_team("ml")
    record = store.submit("ml", gpu_job("j", "true", nodes=1))
    (log := tmp_path / "node-0.log").write_text("hi\n")
    probe = Probe(log)
    with TestClient(create_app(store, probe)) as client:  # type: ignore[arg-type]
        resp = client.get(
            f"/v1/jobs/{record.id}/logs?attempt=1", headers={"Authorization": f"Bearer {token}"}
        )
        store.transition(record.id, [JobState.PENDING], JobState.CANCELLED)  # a follow ends at once
        followed = client.get(
            f"/v1/jobs/{record.id}/logs?attempt=1&follow=true", headers={"Authorization": f"Bearer {token}"}
        )
    assert resp.text == followed.text == "hi\n" and probe.on_loop == [False, False]
    assert probe.follow == [False, True]  # only a follow keeps a copy up to date


class Cloud(CloudBackend):
    """A cloud backend that only says which log reads reached it."""

    def __init__(self, name: str, asked: list[tuple[str, int]]) -> None:
        self.name, self.asked = name, asked

    def log_path(self, job_id: str, attempt: int, node_rank: int, over: Any = None) -> Path | None:
        self.asked.append((self.name, attempt))
        return None


def test_an_earlier_attempt_s_log_is_asked_of_the_backend_that_ran_it(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_team("ml")
    job = store.submit("ml", gpu_job("j", "true", nodes=1)).id
    terms = LaunchTerms("aws", "on-demand", 1, 8, "H100", 1.0)
    store.record_launch(job, 1, "p", "aws:b", "h", team="ml", terms=terms)
    store.transition(job, [JobState.PENDING], JobState.PENDING, attempt=2, backend="aws:a")
    asked: list[tuple[str, int]] = []
    backends = {n: Cloud(n, asked) for n in ("aws:a", "aws:b", "aws:c")}
    loop = SimpleNamespace(rt=SimpleNamespace(backends=backends, home=tmp_path), store=store)
    controller = LoopController(loop)  # type: ignore[arg-type]
    assert controller.log_path(job, 1, 0) is None and asked == [("aws:b", 1)]
    asked.clear()
    assert controller.log_path(job, 2, 0) is None and asked == [("aws:a", 2)]
    asked.clear()
    assert controller.log_path(job, 7, 0) is None and sorted(asked) == [(n, 7) for n in sorted(backends)]


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIA:hunter2@lab-logs/overcast",
        "az://logs/p?sv=2024&sig=hunter2",
        "s3://lab-logs/p#hunter2",
        "s3://lab logs/hunter2",
        "file://hunter2/logs",
    ],
)
def test_a_logs_url_with_a_secret_is_refused_and_not_shown(url: str) -> None:
    entry = f"aws:\n  - name: use1\n    region: {REGION}\n    instance_types: [p5.48xlarge]\n"
    entry += f"    logs_url: '{url}'\n"
    with pytest.raises(ValueError, match="logs_url") as err:
        parse_fleet(entry)
    assert "hunter2" not in str(err.value)


def test_scrub_hides_a_password_as_written_and_decoded() -> None:
    url = "s3://AKIA:p%40ss%2Fw@bucket/p?sig=s%2Bx"
    said = cloud_logs.scrub("denied AKIA p@ss/w p%40ss%2Fw s+x s%2Bx bucket/p", url)
    assert said.split() == ["denied", "***", "***", "***", "***", "***", "bucket/p"]
