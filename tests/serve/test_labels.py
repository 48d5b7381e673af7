"""Named outputs on the API: /classify labels from id2label (as vLLM), values on /v1/score, with a real engine."""

import asyncio
import json

import pytest

from rmcluster.config import RMConfig
from rmcluster.demo_model import DemoModelSpec, build_demo_model
from rmcluster.engine import ScoringEngine
from rmcluster.protocol import ClassifyRequest, ScoreRequest
from serve.serving import ScoringService

LABELS = ["helpful", "harmless", "honest"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = build_demo_model(tmp_path_factory.mktemp("labels") / "three", DemoModelSpec(num_labels=3))
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(LABELS)}
    config["label2id"] = {name: i for i, name in enumerate(LABELS)}
    (path / "config.json").write_text(json.dumps(config))
    engine = ScoringEngine.from_config(RMConfig(model={"name": str(path)}))

    async def score_encoded(encoded):  # the engine in-process, where the ingress would call the replicas
        return engine.score_encoded(encoded)

    return ScoringService(engine.encoder, score_encoded, "three"), engine


def test_classify_labels_come_from_id2label(service):
    svc, engine = service
    response = asyncio.run(svc.classify(ClassifyRequest(input=["hello there", "a longer text about apples"])))
    for data in response.data:
        assert data.num_classes == 3 and data.label == LABELS[max(range(3), key=data.probs.__getitem__)]
    assert engine.scorer.output_names == tuple(LABELS)


def test_score_results_name_every_label(service):
    svc, _ = service
    body = asyncio.run(svc.score(ScoreRequest(prompt="2+2?", chosen="4", rejected="5")))
    for result in body.results:
        assert list(result.values) == LABELS and list(result.values.values()) == result.logits
        assert result.score == result.logits[0]
