"""`overcast up`'s banner names the store without its password (the line goes to terminals and logs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from overcast.cli.main import app


def test_up_banner_masks_the_database_password(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "S3cretPassw0rd"
    url = postgres_url.replace("postgres@", f"postgres:{secret}@")  # trust auth: any password works
    assert secret in url
    monkeypatch.setenv("OVERCAST_DATABASE_URL", url)
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: None)  # return at once: the banner is out
    result = CliRunner().invoke(app, ["up", "--port", "0", "--interval", "0.05"])
    assert result.exit_code == 0, result.output
    banner = result.output.splitlines()[0]
    assert secret not in result.output, banner
    assert "store postgresql+psycopg://postgres:***@" in banner
