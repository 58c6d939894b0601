"""A file that is not UTF-8 text is a user's mistake: exit 2 naming the file and line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from overcast.cli.main import app

runner = CliRunner()


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    bad, ok = tmp_path / "bad.yaml", tmp_path / "ok.yaml"
    bad.write_bytes(b"name: a\nrun: \xff\xfe\n")  # Latin-1, say
    ok.write_text("name: a\nrun: x\n")
    return bad, ok


@pytest.mark.parametrize(
    "args",
    [
        ["launch", "{bad}"],
        ["serve", "{bad}", "--server", "http://127.0.0.1:9"],  # refused before any request
        ["optimize", "{ok}", "--fleet", "{bad}"],
    ],
)
def test_not_utf8_is_exit_2_naming_the_file_and_line(files: tuple[Path, Path], args: list[str]) -> None:
    bad, ok = files
    result = runner.invoke(app, [a.format(bad=bad, ok=ok) for a in args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    said = " ".join(result.output.split())  # a console may wrap the line
    assert f"{bad}:2: not UTF-8 text (byte 0xff)" in said, result.output
