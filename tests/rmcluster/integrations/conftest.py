"""A reward app for the trainer adapters' tests, on the session's Serve instance, and the HF reference loop."""

import pytest

from tests.serve.conftest import app_args, deploy

APP = "reward-trainers"
ROUTE = "/trainers"


@pytest.fixture(scope="session")
def trainer_app(serve_url, demo_dir):
    """(app name, base URL) of the demo-model app the adapters call."""
    from ray import serve

    deploy(APP, ROUTE, app_args())
    yield APP, serve_url + ROUTE
    serve.delete(APP)


@pytest.fixture(scope="session")
def reference(demo_dir):
    from tests.reference import ReferenceLoop

    return ReferenceLoop(demo_dir)
