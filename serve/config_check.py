"""Check a Serve config file strictly: `python -m serve.config_check serve.config.yaml`.

`serve run` validates with `ServeDeploySchema`, which drops unknown keys without a word (a
misspelled `autoscaling_config` field simply does nothing). This adds what it misses: every key at
every level must be known to the schema, and the `args:` of each rmcluster application must
validate into `ServeArgs` (strict itself).
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import ValidationError

from .strict_keys import unknown_keys

BUILDER = "serve.app:build_app"


def config_problems(data: Any) -> list[str]:
    """Everything wrong with a parsed Serve config; empty when it is fine."""
    from ray.serve.schema import ServeDeploySchema

    from .args import ServeArgs

    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as err:
        return [f"ServeDeploySchema: {e['loc']}: {e['msg']}" for e in err.errors(include_url=False)]
    problems = [f"unknown key (Serve would drop it): {key}" for key in unknown_keys(data, ServeDeploySchema)]
    for i, app in enumerate(data.get("applications") or []):
        if app.get("import_path") != BUILDER:
            continue
        try:
            ServeArgs.model_validate(app.get("args") or {})
        except ValidationError as err:
            problems += [f"applications[{i}].args.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in err.errors(include_url=False)]
    return problems


def main(argv: list[str] | None = None) -> int:
    import yaml

    paths = argv if argv is not None else sys.argv[1:]
    failed = 0
    for path in paths:
        with open(path) as f:
            problems = config_problems(yaml.safe_load(f))
        print(f"{path}: {'ok' if not problems else ''}")
        for problem in problems:
            print(f"  {problem}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
