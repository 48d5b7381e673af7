"""Wire protocol and client module: cheap to import, errors that survive pickling and name item and field."""

import pickle
import subprocess
import sys

import pytest
from pydantic import ValidationError

from rmcluster.protocol import (
    InvalidInputError, ItemRejectedError, ScoreRequest, ServiceOverloadedError, invalid_input,
)


def test_client_and_protocol_import_no_ray_httpx_or_torch():
    code = ("import sys, rmcluster.client, rmcluster.protocol; "
            "bad = [m for m in ('ray', 'httpx', 'torch', 'transformers', 'fastapi') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_keep_their_fields_across_pickling():
    err = pickle.loads(pickle.dumps(InvalidInputError("conversations.2.0.content: Field required", 2,
                                                      "conversations.2.0.content")))
    assert (err.item, err.field, err.status_code) == (2, "conversations.2.0.content", 422)
    assert isinstance(err, ValueError) and str(err).startswith("conversations.2")
    over = pickle.loads(pickle.dumps(ServiceOverloadedError("busy", retry_after_s=3.0)))
    assert over.retry_after_s == 3.0 and over.status_code == 503
    assert ItemRejectedError("x", item=1).to_response().error.code == 400


@pytest.mark.parametrize(
    "body, item, field",
    [
        ({"conversations": [[{"role": "user", "content": "a"}], [{"role": "user"}]]}, 1, "conversations.1.0.content"),
        ({"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "r"}, 0, "chosen.0.content"),
        ({"prompt": "p", "responses": []}, None, "responses"),
        ({"conversations": [[]]}, 0, "conversations.0"),
    ],
)
def test_validation_errors_name_the_item_and_field(body, item, field):
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate(body)
    err = invalid_input(info.value)
    assert (err.item, err.field) == (item, field) and field in err.message


def test_score_request_takes_exactly_one_shape():
    ScoreRequest.model_validate({"prompt": "p", "chosen": "a", "rejected": "b"})
    for bad in ({}, {"conversations": [[{"role": "user", "content": "x"}]], "prompt": "p"},
                {"responses": ["a"]}, {"prompt": "p", "responses": ["a"], "chosen": "c", "rejected": "r"}):
        with pytest.raises(ValidationError):
            ScoreRequest.model_validate(bad)
