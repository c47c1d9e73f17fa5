"""The dashboard's static mount beside the API: pages at /, and the API's namespace untouched
(a missing /v1 route is the API's 404 whatever the method, as without a dashboard)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from penguinmails.api.http.dashboard import mount_dashboard
from penguinmails.api.http.errors import install_error_handlers
from penguinmails.common.settings import dashboard_dir


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "index.html").write_text("<!doctype html><title>PenguinMails</title>")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "index-abc.js").write_text("console.log(1)")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    mount_dashboard(app, tmp_path)
    return TestClient(app)


def test_pages_and_assets_are_served_at_the_root(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<title>PenguinMails</title>" in page.text
    assert client.get("/assets/index-abc.js").text == "console.log(1)"
    assert client.get("/v1/ping").json() == {"pong": "yes"}  # routes win over the mount


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_missing_api_route_stays_the_apis_404(client: TestClient, method: str) -> None:
    answer = client.request(method, "/v1/billing/webhook")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "route_missing"


def test_a_missing_file_is_a_404_in_the_envelope(client: TestClient) -> None:
    answer = client.get("/assets/gone.js")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "route_missing"


def test_a_dashboard_dir_without_a_build_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PM_DASHBOARD_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"PM_DASHBOARD_DIR=.*no index\.html.*make web"):
        dashboard_dir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    assert dashboard_dir() == tmp_path
