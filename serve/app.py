"""The application builder: `serve run serve.config.yaml` imports `serve.app:build_app`.

It decorates the two plain classes (model server and ingress) with the options resolved from
`ServeArgs`, binds them, and logs what it resolved.
"""

# No `from __future__ import annotations` here: Serve validates the config's `args:` into the
# builder's parameter type only when the annotation is the class itself, not a string.

import logging

from ray import serve
from ray.serve import Application

from rmcluster.config import BatchingConfig

from .args import ServeArgs

log = logging.getLogger("ray.serve")

MODEL_DEPLOYMENT = "RewardModelServer"
INGRESS_DEPLOYMENT = "RewardIngress"


def build_app(args: ServeArgs) -> Application:
    from rmcluster.scorers import check_loadable

    from .ingress import RewardIngress
    from .model_server import RewardModelServer

    check_loadable(args.rm)  # a refused or missing model fails `serve run` here, not in a replica loop

    model_options = {**args.model_server.deployment_options(), "user_config": args.batch_tuning().model_dump()}
    # Batching reaches the model replicas only through user_config: with it out of their constructor
    # arguments, a batching change is a lightweight reconfigure, not a replica restart. The ingress
    # encodes with the user's config as given.
    model_rm = args.rm.model_copy(update={"batching": BatchingConfig()})
    if args.ingress.colocated:
        from .colocated import RewardServer

        log.info("build_app: model %s; %s (colocated HTTP) options %s", args.rm.model.name, MODEL_DEPLOYMENT,
                 model_options)
        server = serve.deployment(serve.ingress()(RewardServer), name=MODEL_DEPLOYMENT, **model_options)
        return server.bind(model_rm, args.model_server.torch_threads, args.rm, args.ingress)
    ingress_options = args.ingress.deployment_options()
    log.info("build_app: model %s; %s options %s; %s options %s", args.rm.model.name, MODEL_DEPLOYMENT,
             model_options, INGRESS_DEPLOYMENT, ingress_options)
    model = serve.deployment(RewardModelServer, name=MODEL_DEPLOYMENT, **model_options)
    ingress = serve.deployment(serve.ingress()(RewardIngress), name=INGRESS_DEPLOYMENT, **ingress_options)
    return ingress.bind(model.bind(model_rm, args.model_server.torch_threads), args.rm, args.ingress)
