"""rmcluster's Ray Serve application: `serve run serve.config.yaml` (import path `serve.app:build_app`).

Layout, one job per module: `args` (ServeArgs), `model_server` (the model-holding deployment and its
batching), `serving` (request logic), `router` (HTTP routes and status codes), `ingress` (the
FastAPI deployment, handle API), `app` (the builder). The wire models live in `rmcluster.protocol`,
shared with `rmcluster.client`. Importing this package is cheap; the builder imports the rest.
"""

from typing import TYPE_CHECKING, Any

__all__ = ["ServeArgs", "build_app"]

if TYPE_CHECKING:
    from .app import build_app
    from .args import ServeArgs


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from .app import build_app

        return build_app
    if name == "ServeArgs":
        from .args import ServeArgs

        return ServeArgs
    raise AttributeError(name)
