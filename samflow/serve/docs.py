"""The API docs at /docs (Swagger UI) and /redoc, served from this machine: they work offline and load nothing
from a CDN (FastAPI's defaults load their scripts from one, and the `fastapi` package ships no assets).

The assets come from the `fastapi-offline` package (part of the `serve` extra: Swagger UI 5, which renders FastAPI's
OpenAPI 3.1 schema, ReDoc, a favicon), only its static files, not its app. `swagger-ui-bundle` ships Swagger UI 4,
which cannot render OpenAPI 3.1, so it is not used. Without the package /docs is a minimal page of this module that
lists the endpoints from /openapi.json with a few lines of inline script (no external file).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)
ASSETS_URL = "/docs-assets"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def assets_dir() -> Path | None:
    """The folder of the Swagger UI files (fastapi-offline's), or None when it is not installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in SWAGGER_FILES) else None


def install_docs(app: FastAPI, title: str) -> None:
    """Routes /docs and /redoc (made with FastAPI(docs_url=None, redoc_url=None)) and their local assets."""
    openapi_url = app.openapi_url or "/openapi.json"
    folder = assets_dir()
    if folder is None:
        log.info("fastapi-offline is not installed: /docs is a plain list of the endpoints")

        @app.get("/docs", include_in_schema=False)
        def plain_docs() -> HTMLResponse:
            return HTMLResponse(_PLAIN_DOCS.replace("{title}", title).replace("{openapi}", openapi_url))

        return
    app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")
    favicon = f"{ASSETS_URL}/favicon.png" if (folder / "favicon.png").is_file() else ""

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - API docs",
                                   swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_URL}/swagger-ui.css", swagger_favicon_url=favicon,
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from swagger.io

    if (folder / "redoc.standalone.js").is_file():
        @app.get("/redoc", include_in_schema=False)
        def redoc() -> HTMLResponse:
            return get_redoc_html(openapi_url=openapi_url, title=f"{title} - API docs",
                                  redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=favicon,
                                  with_google_fonts=False)


_PLAIN_DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - API docs</title>
<style>body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em}
code{background:#f3f3f3;padding:0 .25em}h2{font-size:1.05em;margin-top:1.6em}pre{white-space:pre-wrap}</style>
</head><body><h1>{title}: API</h1><p>The schema: <a href="{openapi}">{openapi}</a>
(Swagger UI needs <code>pip install fastapi-offline</code>).</p><div id="paths">loading...</div>
<script>
fetch("{openapi}").then((r) => r.json()).then((spec) => {
  const out = document.getElementById("paths");
  out.textContent = "";
  const p = document.createElement("p");
  p.textContent = spec.info.description || "";
  out.append(p);
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const h = document.createElement("h2");
      h.textContent = method.toUpperCase() + " " + path;
      const d = document.createElement("pre");
      d.textContent = (op.summary || "") + "\\n" + (op.description || "");
      out.append(h, d);
    }
  }
});
</script></body></html>
"""
