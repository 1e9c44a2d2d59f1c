"""Issue 17, item 4: who may call the service.

A trusted-host check (DNS rebinding), same-origin by default (a cross-origin `text/plain` upload is never decoded or
encoded), proper content types, an access token required off loopback, and API docs served from this machine."""

from __future__ import annotations

import re

import pytest
from hostile_testing import error

from samflow.cli import main
from samflow.errors import SamflowError
from samflow.serve import ServiceSettings, create_app


def test_requests_for_other_hosts_are_refused(make_client):
    with make_client() as client:
        assert "attacker.example" in error(client.get("/api/health", headers={"host": "attacker.example"}), 400,
                                           "bad_host")
        error(client.get("/", headers={"host": "attacker.example:8000"}), 400, "bad_host")
        error(client.get("/api/health", headers={"host": "localhost.attacker.example"}), 400, "bad_host")
        for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1234", "[::1]:8000", "app.localhost", "192.168.1.5"):
            assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    with make_client(allowed_hosts=("svc.example", "*.corp.example")) as client:
        for host in ("svc.example:8000", "a.corp.example"):
            assert client.get("/api/health", headers={"host": host}).status_code == 200, host
        error(client.get("/api/health", headers={"host": "corp.example.evil"}), 400, "bad_host")


def test_cross_origin_upload_is_refused_before_it_is_decoded(make_client, scene_png, segmenter):
    with make_client() as client:
        service = client.app_state.service
        encodes, images = segmenter.stats.encodes, len(service.images)
        for content_type in ("text/plain", "image/png", None):
            headers = {"origin": "http://attacker.example"} | ({"content-type": content_type} if content_type else {})
            response = client.post("/api/images", content=scene_png, headers=headers)
            assert "attacker.example" in error(response, 403, "origin_not_allowed")
        error(client.post("/api/images", content=scene_png, headers={"origin": "null"}), 403, "origin_not_allowed")
        assert segmenter.stats.encodes == encodes and len(service.images) == images  # nothing decoded or encoded
        # A simple-request content type without an Origin (not a browser) is refused too: uploads are images.
        error(client.post("/api/images", content=scene_png, headers={"content-type": "text/plain"}), 415,
              "unsupported_media_type")
        error(client.post("/api/images", content=scene_png,
                          headers={"content-type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type")
        assert len(service.images) == images
        # Same origin is fine.
        same = client.post("/api/images", content=scene_png,
                           headers={"origin": "http://127.0.0.1", "content-type": "image/png"})
        assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
        iid = same.json()["id"]
        seg = f"/api/images/{iid}/segment"
        error(client.post(seg, content=b'{"points": [[5, 5]]}', headers={"content-type": "text/plain"}), 415,
              "unsupported_media_type")
        error(client.post(seg, json={"points": [[5, 5]]}, headers={"origin": "https://attacker.example"}), 403,
              "origin_not_allowed")
        assert client.post(seg, json={"points": [[5, 5]]}).status_code == 200


def test_listed_origins_get_cors_headers(make_client, scene_png):
    origin = "https://tool.example"
    with make_client(cors_origins=(origin,)) as client:
        preflight = client.options("/api/images", headers={"origin": origin, "access-control-request-method": "POST",
                                                            "access-control-request-headers": "content-type"})
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == origin
        response = client.post("/api/images", content=scene_png, headers={"origin": origin, "content-type": "image/png"})
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in response.headers
        error(client.options("/api/images", headers={"origin": "https://other.example",
                                                     "access-control-request-method": "POST"}), 403,
              "origin_not_allowed")


def test_access_token(make_client, scene_png):
    with make_client(token="s3cret-token") as client:
        error(client.get("/api/health"), 401, "unauthorized")
        error(client.get("/"), 401, "unauthorized")
        error(client.get("/api/health", headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
        assert client.get("/api/health", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.get("/api/health", headers={"x-samflow-token": "s3cret-token"}).status_code == 200
        error(client.post("/api/images", content=scene_png), 401, "unauthorized")
        # A browser opens /?token=... once: a cookie (HttpOnly, SameSite=Strict), and the address without it.
        login = client.get("/?token=s3cret-token", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "samflow_token=s3cret-token" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.cookies.get("samflow_token") == "s3cret-token"  # the client keeps it, as a browser does
        page = client.get("/")
        assert page.status_code == 200 and "app/app.js" in page.text
        assert client.get("/app/app.js").status_code == 200
        assert client.post("/api/images", content=scene_png, headers={"content-type": "image/png"}).status_code == 200
        client.cookies.clear()
        assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
        error(client.get("/"), 401, "unauthorized")


def test_token_is_required_off_loopback(segmenter, monkeypatch, capsys):
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(SamflowError, match="needs an access token"):
            create_app(ServiceSettings(host=host), segmenter=segmenter)
    app = create_app(ServiceSettings(host="0.0.0.0", token="t"), segmenter=segmenter)
    assert app.state.service.settings.token == "t"
    # The command refuses to start (before loading anything); SAMFLOW_TOKEN counts as --token.
    monkeypatch.delenv("SAMFLOW_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) != 0
    assert "--token" in capsys.readouterr().err
    from samflow.serve.server import BackgroundServer

    with pytest.raises(SamflowError, match="needs an access token"):
        with BackgroundServer(create_app(ServiceSettings(), segmenter=segmenter), host="0.0.0.0"):
            pass


def test_docs_load_nothing_from_elsewhere(make_client):
    with make_client() as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
        assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        for url in urls:
            if url.startswith("/") and not url.endswith(".json"):
                assert client.get(url).status_code == 200, url
        assert "validatorUrl" in page.text  # no badge fetched from swagger.io
        assert client.get("/openapi.json").status_code == 200
        redoc = client.get("/redoc")
        if redoc.status_code == 200:
            assert "fonts.googleapis" not in redoc.text and "cdn." not in redoc.text
