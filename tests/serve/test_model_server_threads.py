"""The model replica loads and runs its model on one thread: libgomp slows every team down once the threads
that ever ran an OpenMP region outnumber the cores, so a second team left by loading elsewhere costs each
forward (bench/RESULTS.md: about 1.27x per step for a 2-CPU replica on 2 cores). No Ray cluster: the class
itself, with Serve's batch queue and the replica context it reads."""

import asyncio
import threading
from types import SimpleNamespace

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.records import ScoreItem


def test_the_model_loads_on_the_thread_that_runs_its_forwards(demo_dir, reference, monkeypatch):
    from ray import serve

    from serve import model_server
    from serve.model_server import RewardModelServer

    threads: dict[str, list[threading.Thread]] = {"load": [], "forward": []}
    load, score = ScoringEngine.from_config, ScoringEngine.score_encoded

    def recording_load(cfg):
        threads["load"].append(threading.current_thread())
        return load(cfg)

    def recording_score(self, *args, **kwargs):
        threads["forward"].append(threading.current_thread())
        return score(self, *args, **kwargs)

    # @serve.batch reads the replica's max_ongoing_requests, to warn when a batch can never fill.
    replica = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=8), replica_tag="test")
    monkeypatch.setattr(serve, "get_replica_context", lambda: replica)
    monkeypatch.setattr(model_server.ScoringEngine, "from_config", staticmethod(recording_load))
    monkeypatch.setattr(model_server.ScoringEngine, "score_encoded", recording_score)
    rm = RMConfig(model={"name": str(demo_dir), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"})
    server = RewardModelServer(rm)
    server.reconfigure({"batching": rm.batching.model_dump(), "batch_wait_timeout_s": 0.0})
    conv = [{"role": "user", "content": "Is the sky blue?"}, {"role": "assistant", "content": "Yes."}]
    items = server.engine.encode([ScoreItem.conversation("0", conv)])

    async def call():
        return await server.score_encoded(items)

    (result,) = asyncio.run(call())
    assert abs(result.score - reference.scores([conv])[0]) < 1e-4
    assert len(threads["load"]) == 1 and threads["forward"], threads
    assert threads["load"][0] is not threading.main_thread()
    assert all(t is threads["load"][0] for t in threads["forward"]), threads
