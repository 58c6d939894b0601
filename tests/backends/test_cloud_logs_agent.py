"""The agent's side of cloud logs (backends/cloud_logs.py, cloud_agent.ship_logs) when things go wrong: a
stop, a store that fails at the end, a store that hangs. Stores are fsspec filesystems registered here
(a ``file://`` folder that fails once, a memory store that hangs until released)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from overcast.backends import cloud_logs
from overcast.backends.cloud_agent import LogShipping, ship_logs
from overcast.backends.cloud_logs import PartShipper, part_name, shipping
from tests.backends.cloud_checks import eventually


def parts(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("part-*"))]


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def test_a_stop_uploads_at_once_and_then_about_every_second(tmp_path: Path) -> None:
    source, folder = tmp_path / "job.log", tmp_path / "bucket" / "j" / "1" / "node-0"
    source.write_bytes(b"")
    shipper = PartShipper(f"file://{folder}", source)
    with shipping(shipper, every=3600.0) as hurry:  # no periodic upload within the test
        append(source, b"step 1000\n")
        hurry()  # a stop was asked: the job's output so far is uploaded now, not in up to 15 s
        assert eventually(lambda: parts(folder) == [b"step 1000\n"])
        append(source, b"checkpointing\n")  # printed during the grace: uploaded within about a second
        assert eventually(lambda: parts(folder) == [b"step 1000\n", b"checkpointing\n"])
    assert (folder / "end").read_text() == "2"


def test_ship_logs_hurries_the_uploads_once_the_agent_is_told_to_stop(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    folder = bucket / "j" / "1" / "node-0"
    seen: list[bool] = []

    def run(out: Path | None, should_stop: Any) -> tuple[int, bool]:
        assert out is not None
        append(out, b"ready\n")
        assert should_stop() == "spot notice"  # what run_job asks each poll
        seen.append(eventually(lambda: parts(folder) == [b"ready\n"]))  # not 3600 s later
        return 143, True

    logs = LogShipping(f"file://{bucket}", 3600.0, "j", "1")
    assert ship_logs(logs, 0, lambda: "spot notice", run) == (143, True)
    assert seen == [True]


class Blip(LocalFileSystem):
    """A local folder whose store refuses the rename of ``fail`` (a 503 SlowDown) ``times`` times."""

    protocol = "blip"
    fail, times = "", 0

    def mv(self, path1: str, path2: str, **kw: Any) -> None:
        if path2.endswith(Blip.fail) and Blip.times > 0:
            Blip.times -= 1
            raise OSError("503 SlowDown")
        super().mv(path1, path2, **kw)


@pytest.fixture
def blip(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Blip]]:
    fsspec.register_implementation("blip", Blip, clobber=True)
    monkeypatch.setattr(cloud_logs, "RETRY_PAUSE_S", 0.01)
    yield Blip
    Blip.times = 0


@pytest.mark.parametrize("failing", [part_name(1), "end"])
def test_the_end_is_tried_again_until_the_store_takes_it(
    tmp_path: Path, blip: type[Blip], failing: str
) -> None:
    source, folder = tmp_path / "job.log", tmp_path / "bucket" / "j" / "1" / "node-0"
    source.write_bytes(b"epoch 1\n")
    shipper = PartShipper(f"blip://{folder}", source)
    assert shipper.ship()
    append(source, b"Traceback: CUDA out of memory\n")
    blip.fail, blip.times = failing, 2  # the last upload fails twice (a blip), then goes through
    assert shipper.finish()
    assert parts(folder) == [b"epoch 1\n", b"Traceback: CUDA out of memory\n"]
    assert (folder / "end").read_text() == "2"


def test_the_end_gives_up_at_its_deadline(tmp_path: Path, blip: type[Blip]) -> None:
    source, folder = tmp_path / "job.log", tmp_path / "bucket" / "j" / "1" / "node-0"
    source.write_bytes(b"epoch 1\n")
    shipper = PartShipper(f"blip://{folder}", source)
    assert shipper.ship()
    blip.fail, blip.times = "end", 10**9  # never
    assert not shipper.finish(deadline=0.0)  # past already: one try, no wait


class Hang(MemoryFileSystem):
    """A store whose writes and reads hang until ``release`` (an NFS hard mount, a black-holed
    endpoint); ``entered`` is set once one hangs."""

    protocol = "hang"
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]
    release, entered = threading.Event(), threading.Event()

    def pipe_file(self, path: str, value: bytes, *args: Any, **kw: Any) -> None:
        Hang.entered.set()
        Hang.release.wait(30)
        super().pipe_file(path, value, *args, **kw)

    def cat_file(self, path: str, *args: Any, **kw: Any) -> bytes:
        Hang.entered.set()
        Hang.release.wait(30)
        return super().cat_file(path, *args, **kw)


@pytest.fixture
def hang() -> Iterator[type[Hang]]:
    fsspec.register_implementation("hang", Hang, clobber=True)
    Hang.release.clear()
    Hang.entered.clear()
    yield Hang
    Hang.release.set()


def test_the_console_goes_on_while_the_store_hangs(tmp_path: Path, hang: type[Hang]) -> None:
    source, console = tmp_path / "job.log", io.BytesIO()
    source.write_bytes(b"line 1\n")
    shipper = PartShipper("hang://bucket/echo/1/node-0", source, console)
    with shipping(shipper, every=0.05):
        assert eventually(hang.entered.is_set)  # an upload hangs
        append(source, b"line 2 (the traceback)\n")
        assert eventually(lambda: console.getvalue() == b"line 1\nline 2 (the traceback)\n")
        hang.release.set()  # the store answers again: the end goes through
    store = fsspec.filesystem("hang")
    assert [store.cat_file(f"hang://bucket/echo/1/node-0/{n}") for n in ("part-00000001", "end")] == [
        b"line 2 (the traceback)\n",
        b"2",
    ]
