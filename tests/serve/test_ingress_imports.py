"""The ingress path (Serve deployment module, router, service, weight-free encoder) imports no torch."""

import subprocess
import sys
import textwrap

from tests.conftest import REPO

CHECK = textwrap.dedent("""
    import sys
    from fastapi.testclient import TestClient

    import serve.ingress  # the deployment's module: ray.serve, FastAPI, router, service, metrics
    from rmcluster.config import RMConfig
    from rmcluster.outputs import ScoreOutput, ScoreResult
    from rmcluster.scorers import build_encoder
    from serve.router import build_router
    from serve.serving import ScoringService

    encoder = build_encoder(RMConfig(model={{"name": {path!r}}}))

    async def score(encoded):  # stands in for the model deployment: the number of tokens as the score
        return [ScoreResult.ok(ScoreOutput(float(e.num_tokens)), e.num_tokens) for e in encoded]

    async def health():
        return None

    app = build_router(ScoringService(encoder, score, "demo"), max_body_bytes=1 << 20, health=health)
    with TestClient(app) as client:
        pair = client.post("/v1/score", json={{"prompt": "2+2?", "chosen": "4", "rejected": "5"}}).json()
        assert pair["scores"] == [r["num_tokens"] for r in pair["results"]] and pair["scores"][0] > 5, pair
        assert client.post("/classify", json={{"input": "hi"}}).status_code == 200
        assert client.post("/get_reward", json={{"query": ["hi"]}}).status_code == 200
    assert "torch" not in sys.modules, "the ingress path imported torch"
    print("no torch")
""")


def test_the_ingress_path_imports_no_torch(demo_dir):
    done = subprocess.run([sys.executable, "-c", CHECK.format(path=str(demo_dir))], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "no torch" in done.stdout, done.stderr[-3000:]
