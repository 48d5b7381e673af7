"""Generative judges (three presets and a user template, pairwise and pointwise) and DPO (with and without a
reference) on every front end: `rmcluster score --config`, Serve (HTTP and handle) and the corpus job."""

from __future__ import annotations

import json
import math

import httpx
import pyarrow.parquet as pq
import pytest

from rmcluster.cli import main as cli
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.judging import GRADE_SYSTEM, GRADE_USER, MTBENCH_SYSTEM, MTBENCH_USER, YES_NO_USER
from rmcluster.results import table_rows
from rmcluster.store import ResultsStore
from tests.jobs.conftest import run_job
from tests.kinds import mixed_records
from tests.reference_kinds import judge_messages, judge_reference, pairwise_judge_reference, response_logps

pytestmark = pytest.mark.ray

TOL = 1e-4
TEMPLATE = "Rate this.\nQ: {{ prompt }}\nA: {{ response }}\nGood? Yes or No.\n"


def _split(conv):
    return "\n\n".join(m["content"] for m in conv[:-1]), conv[-1]["content"]


def _pointwise(system, template, prefix, verdicts):
    path = demo_checkpoint_path("causal_lm")

    def expected(conv) -> float:
        prompt, response = _split(conv)
        logits = judge_reference(path, judge_messages(system, template, prompt=prompt, response=response), prefix,
                                 verdicts)
        if len(verdicts) == 2:
            return logits[0] - logits[1]
        weights = [math.exp(x - max(logits)) for x in logits]
        return sum(float(v) * w for v, w in zip(verdicts, weights)) / sum(weights)

    return expected


# name -> (config of the model, the expected score of each item of a record)
JUDGES = {
    "pointwise_yes_no": ({"template": "pointwise_yes_no"}, _pointwise(None, YES_NO_USER, "", ["Yes", "No"])),
    "grade_1_5": ({"template": "grade_1_5"}, _pointwise(GRADE_SYSTEM, GRADE_USER, "[RESULT] ", list("12345"))),
    "user_template": ({"template": "TEMPLATE_FILE", "system": "Be fair."},
                      _pointwise("Be fair.", TEMPLATE[:-1], "", ["Yes", "No"])),
    "pairwise_mtbench": ({"template": "pairwise_mtbench"}, None),
}


def _expected(name, records):
    if name != "pairwise_mtbench":
        return [JUDGES[name][1](c) for _, convs in records for c in convs]
    path = demo_checkpoint_path("causal_lm")
    out = []
    for record, _ in records:
        score, _, _ = pairwise_judge_reference(path, MTBENCH_SYSTEM, MTBENCH_USER, "[[", record["prompt"],
                                               record["chosen"], record["rejected"])
        out += [score, -score]
    return out


def _dpo_expected(records, reference: bool):
    policy, ref = demo_checkpoint_path("causal_lm"), demo_checkpoint_path("causal_lm_reference")
    out = []
    for _, convs in records:
        for conv in convs:
            lp = sum(response_logps(policy, conv[:-1], conv[-1:]))
            out.append(lp - sum(response_logps(ref, conv[:-1], conv[-1:])) if reference else lp)
    return out


def _close(rows, expected):
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        assert row["error"] is None and abs(row["score"] - want) < TOL * max(1.0, abs(want)), (row, want)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("generative")
    records = mixed_records(24, seed=51, max_words=60)
    pairs = [(r, c) for r, c in mixed_records(40, seed=52, max_words=60) if "chosen" in r][:12]
    prompted = [(r, c) for r, c in records if all(len(conv) > 1 for conv in c)]  # DPO needs response tokens
    for name, recs in (("mixed", records), ("pairs", pairs), ("prompted", prompted)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r, _ in recs))
    (root / "judge.jinja").write_text(TEMPLATE)
    return root, {"mixed": records, "pairs": pairs, "prompted": prompted}


def _judge_config(root, name) -> dict:
    model = {"kind": "generative_judge", "name": "demo", **JUDGES[name][0]}
    if model["template"] == "TEMPLATE_FILE":
        model["template"] = str(root / "judge.jinja")
    return {"model": model}


@pytest.mark.parametrize("name", list(JUDGES))
def test_cli_with_a_judge_config(name, data, tmp_path):
    root, records = data
    corpus = "pairs" if name == "pairwise_mtbench" else "mixed"
    config = tmp_path / "judge.yaml"
    config.write_text(json.dumps(_judge_config(root, name)))  # JSON is YAML
    out = tmp_path / "out.parquet"
    assert cli(["score", "--config", str(config), "--input", str(root / f"{corpus}.jsonl"), "--output", str(out),
                "--quiet"]) == 0
    _close(table_rows(pq.read_table(out)), _expected(name, records[corpus]))


@pytest.mark.parametrize("reference", [True, False], ids=["with-reference", "reference-free"])
def test_cli_dpo(reference, data, tmp_path):
    root, records = data
    out = tmp_path / "out.parquet"
    flags = ["--reference", "demo"] if reference else []
    assert cli(["score", "--kind", "dpo", "--model", "demo", *flags, "--input", str(root / "prompted.jsonl"),
                "--output", str(out), "--quiet"]) == 0
    _close(table_rows(pq.read_table(out)), _dpo_expected(records["prompted"], reference))


@pytest.fixture(scope="module")
def apps(serve_url, data):
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    root, _ = data
    small = {"model_server": {"num_cpus": 0.25, "num_replicas": 1}, "ingress": {"num_cpus": 0.1, "num_replicas": 1}}
    handles = {}
    for name, rm in (("judge", _judge_config(root, "pairwise_mtbench")),
                     ("dpo", {"model": {"kind": "dpo", "name": "demo", "reference": "demo"}})):
        handles[name] = serve.run(build_app(ServeArgs.model_validate({"rm": rm, **small})), name=f"gen-{name}",
                                  route_prefix=f"/gen-{name}")
    yield serve_url, handles
    for name in handles:
        serve.delete(f"gen-{name}")


def test_serve_http_and_handle(apps, data):
    url, handles = apps
    _, records = data
    pairs = [r for r, _ in records["pairs"]]
    body = httpx.post(f"{url}/gen-judge/v1/score", json={"pairs": pairs}, timeout=120).json()
    _close([{"error": None, **r} for r in body["results"]], _expected("pairwise_mtbench", records["pairs"]))
    assert set(body["results"][0]["values"]) == {"p_win_as_a", "p_win_as_b"}
    got = handles["judge"].score_pairs.remote(pairs).result()
    _close([{"error": None, "score": s} for g in got for s in g], _expected("pairwise_mtbench", records["pairs"]))

    rows = handles["dpo"].score_records.remote(pairs).result()
    _close(rows, _dpo_expected(records["pairs"], reference=True))
    assert set(rows[0]["values"]) == {"policy_logp", "reference_logp", "response_tokens"}


@pytest.mark.parametrize("kind", ["judge", "dpo"])
def test_corpus_job(kind, data, ray_cluster, tmp_path):
    root, records = data
    store = tmp_path / "store"
    flags = (["--config", str(tmp_path / "c.yaml")] if kind == "judge"
             else ["--kind", "dpo", "--model", "demo", "--reference", "demo"])
    (tmp_path / "c.yaml").write_text(json.dumps({"scoring": _judge_config(root, "pairwise_mtbench")}))
    rc, printed = run_job(["--input", str(root / "pairs.jsonl"), "--output", str(store), *flags])
    assert rc == 0
    by_key = {(r["id"], r["index"]): r for r in table_rows(ResultsStore(str(store)).read())}
    rows = [by_key[(rec["id"], i)] for rec, _ in records["pairs"] for i in range(2)]
    expected = _expected("pairwise_mtbench", records["pairs"]) if kind == "judge" \
        else _dpo_expected(records["pairs"], reference=True)
    _close(rows, expected)
    summary = json.loads((store / "summary.json").read_text())
    assert summary["pairs"] == len(records["pairs"])
    if kind == "judge":
        assert summary["judge"]["comparisons"] == len(records["pairs"]) and "position_bias" in printed
