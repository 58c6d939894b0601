"""Cloud nodes' logs through an account's ``logs_url`` (backends/cloud_logs.py): the parts an agent uploads
and the server's copies of them, then real agents (the AWS agent on moto's EC2, as in test_aws) with a
``file://`` folder standing in for the bucket, read through the API."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from overcast.api.app import create_app
from overcast.backends import cloud_log_copies
from overcast.backends.aws import AwsBackend
from overcast.backends.base import EventKind, LaunchRequest
from overcast.backends.cloud_log_copies import LogCopies
from overcast.backends.cloud_logs import PartShipper, log_dir, part_name, redact
from overcast.catalog.fleet import parse_fleet
from overcast.control.controller import LoopController
from overcast.control.setup import backends_from_fleet
from overcast.placement.pool import Purchase
from overcast.store import JobState, Store
from tests.backends.aws_vm import VmEmulator
from tests.backends.cloud_checks import eventually, fast_loop, wait_events
from tests.backends.test_aws import gpu_job, pool_of, settings, vms  # noqa: F401 (vms: a fixture)
from tests.control.harness import run_until, state
from tests.fixtures.moto import REGION, MotoEC2, moto_ec2, moto_server  # noqa: F401 (fixtures)


def parts(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("part-*"))]


# -- the parts, without nodes ----------------------------------------------------------------------


def test_each_part_holds_only_the_new_bytes_and_end_counts_them(tmp_path: Path) -> None:
    source, bucket = tmp_path / "job.log", tmp_path / "bucket"
    source.write_bytes(b"one\n")
    shipper = PartShipper(f"file://{bucket}/j1/1/node-0", source)
    assert shipper.ship()
    with source.open("ab") as fh:
        fh.write(b"two\n")
    assert shipper.ship() and shipper.ship()  # nothing new the second time: no empty part
    shipper.finish()
    folder = bucket / "j1" / "1" / "node-0"
    assert parts(folder) == [b"one\n", b"two\n"]
    assert (folder / "end").read_text() == "2"
    assert sorted(p.name for p in folder.iterdir()) == ["end", part_name(0), part_name(1)]  # no .tmp


def test_a_failed_upload_is_retried_as_the_same_part_with_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, blocker = tmp_path / "job.log", tmp_path / "blocker"
    blocker.write_text("a file where the bucket's folder should be")
    source.write_bytes(b"first\n")
    shipper = PartShipper(f"file://{blocker}/j/1/node-0", source)
    assert not shipper.ship()
    assert f"log upload to file://{blocker}/j/1/node-0: NotADirectoryError" in capsys.readouterr().err
    with source.open("ab") as fh:
        fh.write(b"second\n")
    blocker.unlink()
    assert shipper.ship()  # the store is back
    assert parts(blocker / "j" / "1" / "node-0") == [b"first\n", b"second\n"]


def test_copies_append_new_parts_in_order_fetch_each_once_and_stop_at_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_log_copies, "SYNC_EVERY_S", 3600.0)  # only forced syncs after the first
    bucket = tmp_path / "bucket"
    remote = bucket / "j1" / "2" / "node-1"
    warned: list[str] = []
    copies = LogCopies(f"file://{bucket}", tmp_path / "home", warned.append)
    assert copies.path("j1", 2, 1) is None  # nothing uploaded yet
    remote.mkdir(parents=True)
    for n, text in enumerate([b"a\n", b"b\n"]):
        (remote / part_name(n)).write_bytes(text)
    local = copies.local("j1", 2, 1)
    assert local == tmp_path / "home" / "logs" / "j1" / "2" / "node-1.log"
    copies.sync(local, log_dir(f"file://{bucket}", "j1", 2, 1), force=True)
    assert local.read_bytes() == b"a\nb\n"
    (remote / part_name(0)).write_bytes(b"changed\n")  # a part already copied is not fetched again
    (remote / part_name(3)).write_bytes(b"d\n")  # after a gap: not yet
    copies.sync(local, log_dir(f"file://{bucket}", "j1", 2, 1), force=True)
    assert local.read_bytes() == b"a\nb\n"
    (remote / part_name(2)).write_bytes(b"c\n")
    assert copies.path("j1", 2, 1) == local and local.read_bytes() == b"a\nb\n"  # throttled
    (remote / "end").write_text("4")
    copies.sync(local, log_dir(f"file://{bucket}", "j1", 2, 1), force=True)
    assert local.read_bytes() == b"a\nb\nc\nd\n"
    # the node is done: the store is not asked again (it may be gone)
    for p in remote.iterdir():
        p.unlink()
    remote.rmdir()
    monkeypatch.setattr(cloud_log_copies, "SYNC_EVERY_S", 0.0)
    assert copies.path("j1", 2, 1) == local and local.read_bytes() == b"a\nb\nc\nd\n"
    assert warned == []


def test_a_job_id_never_leaves_its_folder_and_no_secret_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for job in ("..", ".", "a/b", "../x", ".hidden", ""):
        with pytest.raises(ValueError):
            log_dir("s3://b/p", job, 1, 0)
        assert LogCopies(f"file://{tmp_path}", tmp_path, print).path(job, 1, 0) is None
    assert log_dir("s3://b/p/", "j-1.x_y", 3, 1) == "s3://b/p/j-1.x_y/3/node-1"
    assert redact("s3://AKIA:secret@bucket/p?sig=x") == "s3://bucket/p"
    assert redact("file:///shared/logs") == "file:///shared/logs"
    secret = "nope://AKIA:hunter2@bucket/p?sig=s3cret"
    shipper = PartShipper(secret, tmp_path / "job.log")
    (tmp_path / "job.log").write_text("x")
    assert not shipper.ship()  # an unknown protocol, whose error names the URL
    said = capsys.readouterr().err
    assert "log upload to nope://bucket/p" in said and "hunter2" not in said and "s3cret" not in said


def test_the_fleet_file_takes_a_logs_url_for_every_cloud_and_hands_it_to_the_backend(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    entry = f"""\
aws:
  - name: use1
    region: {REGION}
    endpoint_url: {moto_ec2.endpoint_url}
    instance_types: [p5.48xlarge]
    image_id: {moto_ec2.image_id()}
    logs_url: LOGS
"""
    (backend,) = backends_from_fleet(parse_fleet(entry.replace("LOGS", "s3://lab-logs/overcast")), tmp_path)
    assert isinstance(backend, AwsBackend) and backend.settings.logs_url == "s3://lab-logs/overcast"
    for bad in ("lab-logs/overcast", "file://relative/logs"):  # not a URL; a path from the cwd
        with pytest.raises(ValueError, match="logs_url"):
            parse_fleet(entry.replace("LOGS", bad))
    (plain,) = backends_from_fleet(parse_fleet(entry.replace("    logs_url: LOGS\n", "")), tmp_path)
    assert plain.settings.logs_url is None and plain.log_path("j", 1, 0) is None


# -- real agents -------------------------------------------------------------------------------------


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents upload every 0.2 s, the server copies every 0.1 s (15 s and 2 s in production)."""
    monkeypatch.setattr("overcast.backends.cloud_agent.UPLOAD_EVERY_S", 0.2)
    monkeypatch.setattr(cloud_log_copies, "SYNC_EVERY_S", 0.1)


def test_the_api_shows_each_rank_of_a_cloud_job_and_a_follow_sees_what_is_printed_later(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
    quick: None,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    bucket, go = tmp_path / "bucket", tmp_path / "go"
    backend = AwsBackend(settings(moto_ec2, logs_url=f"file://{bucket}"), home=tmp_path)
    loop = fast_loop(tmp_path, store, backend)
    token = store.create_team("ml")
    run = (
        f'echo "start $OVERCAST_NODE_RANK"; until [ -e {go} ]; do sleep 0.05; done; '
        'echo "after $OVERCAST_NODE_RANK"; echo oops >&2'
    )
    record = store.submit("ml", gpu_job("talk", run, nodes=2))
    uploaded = [bucket / record.id / "1" / f"node-{r}" / part_name(0) for r in (0, 1)]
    run_until(loop, lambda: all(p.exists() for p in uploaded))
    auth = {"Authorization": f"Bearer {token}"}
    url = f"/v1/jobs/{record.id}/logs"
    with TestClient(create_app(store, LoopController(loop))) as client:
        for rank in (0, 1):
            resp = client.get(f"{url}?rank={rank}", headers=auth)
            assert resp.status_code == 200 and resp.text == f"start {rank}\n"
        followed: list[str] = []
        follower = threading.Thread(
            target=lambda: followed.append(client.get(f"{url}?follow=true", headers=auth).text), daemon=True
        )
        follower.start()
        copies = backend._logs
        assert copies is not None and eventually(lambda: bool(copies._followed))  # the follow has begun
        go.touch()
        run_until(loop, lambda: state(store, record.id).state.terminal)
        follower.join(timeout=20)
        assert state(store, record.id).state is JobState.SUCCEEDED
        assert followed == ["start 0\nafter 0\noops\n"]
        assert client.get(f"{url}?rank=1", headers=auth).text == "start 1\nafter 1\noops\n"
    for rank, vm in enumerate(
        sorted(vms.instances(overcast_job=record.id), key=lambda i: i["AmiLaunchIndex"])
    ):
        assert f"after {rank}" in vms.console(vm["InstanceId"])  # the console still shows the output


def test_a_stopped_job_s_last_words_are_uploaded(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
    quick: None,
) -> None:
    backend = AwsBackend(settings(moto_ec2, logs_url=f"file://{tmp_path / 'bucket'}"), home=tmp_path)
    pool = pool_of(backend, "use1-az2", Purchase.ON_DEMAND)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool, 1, gpu_job("s", saver, nodes=1)))
    assert eventually(lambda: (p := backend.log_path("s", 1, 0)) is not None and "ready" in p.read_text(), 20)
    backend.stop("s", 1, grace_seconds=15.0)
    log = backend.log_path("s", 1, 0)
    assert log is not None and log.read_text().startswith("ready\n") and log.read_text().endswith("saved\n")


def test_an_unwritable_logs_url_leaves_the_job_succeeding(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
    quick: None,
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    backend = AwsBackend(settings(moto_ec2, logs_url=f"file://{blocker}/logs"), home=tmp_path)
    pool = pool_of(backend, "use1-az2", Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("u", 1, pool, 1, gpu_job("u", "echo hi; sleep 0.5; echo bye", nodes=1)))
    events = wait_events(backend, lambda es: any(e.kind is EventKind.SUCCEEDED for e in es))
    assert EventKind.SUCCEEDED in [e.kind for e in events]
    (vm,) = vms.instances(overcast_job="u")
    console = vms.console(vm["InstanceId"])
    assert "hi\n" in console and "bye\n" in console and f"log upload to file://{blocker}/logs" in console
    assert backend.log_path("u", 1, 0) is None
