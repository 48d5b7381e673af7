"""The model fails (issue 14, item 3), with a fault-injecting model server in the real app wiring.

A forward that raises on a poison token fails only its item, and the replica keeps serving. A
replica whose health check fails is replaced by Serve, and a handle client's calls meanwhile are
retried until the new replica answers, with the right scores.
"""

import pytest

from tests.conversations import varied_conversations

from .conftest import app_args, wait_for

pytestmark = pytest.mark.ray

APP, ROUTE = "faults-test", "/faults"
TOL = 1e-4


def _faulty_server_class(poison: int, colocated: bool):
    """Defined here, so Ray ships the class by value to the replica's process."""
    from serve.colocated import RewardServer
    from serve.model_server import RewardModelServer

    class FaultyModelServer(RewardServer if colocated else RewardModelServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.healthy = True
            scorer = self.engine.scorer
            forward, forward_packed = scorer.forward, scorer.forward_packed

            def poisoned(items):
                if any(poison in e.input_ids for e in items):
                    raise RuntimeError("injected fault: CUDA error: an illegal instruction was encountered")

            scorer.forward = lambda batch: poisoned(batch) or forward(batch)
            scorer.forward_packed = lambda units, items: poisoned(items) or forward_packed(units, items)

        def break_health(self) -> None:
            self.healthy = False

        def check_health(self) -> None:
            if not self.healthy:
                raise RuntimeError("injected fault: health check failed")
            super().check_health()

    return FaultyModelServer


@pytest.fixture(scope="module")
def poison(reference):
    return len(reference.tokenizer) - 1  # the last token learned: rare in these random conversations


@pytest.fixture(scope="module", params=["separate", "colocated"])
def faulty_app(request, serve_url, poison):
    """Wired as serve/app.py wires it: model replicas behind an ingress, or colocated (they answer HTTP and
    handle calls themselves, as serve.config.yaml ships)."""
    from ray import serve

    from serve.app import INGRESS_DEPLOYMENT, MODEL_DEPLOYMENT
    from serve.args import ServeArgs
    from serve.ingress import RewardIngress

    colocated = request.param == "colocated"
    args = ServeArgs.model_validate(app_args(colocated=colocated))
    server = _faulty_server_class(poison, colocated)
    options = {"name": MODEL_DEPLOYMENT, "health_check_period_s": 1, "health_check_timeout_s": 5,
               "user_config": args.batch_tuning().model_dump(), **args.model_server.deployment_options()}
    if colocated:
        app = serve.deployment(serve.ingress()(server), **options).bind(args.rm, None, args.rm, args.ingress)
    else:
        model = serve.deployment(server, **options).bind(args.rm, None)
        ingress = serve.deployment(serve.ingress()(RewardIngress), name=INGRESS_DEPLOYMENT,
                                   **args.ingress.deployment_options())
        app = ingress.bind(model, args.rm, args.ingress)
    serve.run(app, name=APP, route_prefix=ROUTE)
    yield serve.get_deployment_handle(MODEL_DEPLOYMENT, APP)
    serve.delete(APP)


def test_a_failing_forward_fails_its_item_only_and_the_replica_keeps_serving(faulty_app, poison, reference):
    from ray import serve

    app = serve.get_app_handle(APP)
    convs = varied_conversations(5, seed=51, max_words=200)
    ids = [reference.ids(c)[0].tolist() for c in convs]
    records = [{"id": str(k), "input_ids": i} for k, i in enumerate(ids)]
    assert not any(poison in i for i in ids)
    records[2]["input_ids"] = ids[2][:-1] + [poison]
    rows = app.score_records.remote(records).result()
    assert "injected fault" in rows[2]["error"] and rows[2]["score"] is None
    good = [r for k, r in enumerate(rows) if k != 2]
    assert all(r["error"] is None for r in good)
    assert all(abs(r["score"] - reference.score(c)) < TOL for r, c in zip(good, convs[:2] + convs[3:]))
    before = faulty_app.info.remote().result()["replica"]
    assert app.score.remote(convs[:2]).result() == pytest.approx(reference.scores(convs[:2]), abs=TOL)
    assert faulty_app.info.remote().result()["replica"] == before  # the same replica, still serving


def test_an_unhealthy_replica_is_replaced_and_client_calls_are_retried(faulty_app, poison, trainer_cls, reference):
    import ray

    trainer = trainer_cls.remote()
    ray.get(trainer.handle_client.remote(APP, one_hop=True))
    convs = varied_conversations(6, seed=52, max_words=200)
    assert not any(poison in reference.ids(c)[0].tolist() for c in convs)
    expected = reference.scores(convs)
    first = faulty_app.info.remote().result()["replica"]
    faulty_app.break_health.remote().result()
    from ray import serve

    from serve.app import MODEL_DEPLOYMENT

    wait_for(lambda: serve.status().applications[APP].deployments[MODEL_DEPLOYMENT].status.value != "HEALTHY", 60,
             "Serve to see the failing health check")
    # Sent while the replica is being replaced: they wait for a replica, or are retried if theirs dies.
    calls = [trainer.client_call.remote("score", [c]) for c in convs]
    def new_replica():
        try:
            tag = faulty_app.info.remote().result(timeout_s=10)["replica"]
        except Exception:  # noqa: BLE001 - the old replica is going away
            return None
        return tag if tag != first else None

    replaced = wait_for(new_replica, 120, "Serve to replace the unhealthy replica")
    assert [s for c in ray.get(calls) for s in c] == pytest.approx(expected, abs=TOL)
    assert faulty_app.info.remote().result()["replica"] == replaced
    assert ray.get(trainer.client_call.remote("score", convs[:2])) == pytest.approx(expected[:2], abs=TOL)
