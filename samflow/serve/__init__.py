"""`samflow serve`: interactive segmentation over HTTP (FastAPI) and the browser app at `/`.

    from samflow.serve import ServiceSettings, create_app
    app = create_app(ServiceSettings(model="tiny"))     # an ASGI app; `samflow serve` runs it with uvicorn

Needs the `serve` extra: fastapi, uvicorn, python-multipart (and fastapi-offline for the Swagger UI at /docs).
Who may call it and the limits on what a request may cost: security.py, policy.py, settings.py.
"""

from samflow.serve.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]


def __getattr__(name: str):  # create_app imports FastAPI: only when asked for
    if name == "create_app":
        from samflow.serve.app import create_app

        return create_app
    raise AttributeError(name)
