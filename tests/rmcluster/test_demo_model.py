import hashlib
import subprocess
import sys

from transformers import AutoTokenizer

from rmcluster.demo_model import DemoModelSpec, build_demo_model
from rmcluster.model_loading import resolve_model_path


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_build_is_deterministic(tmp_path):
    spec = DemoModelSpec(vocab_size=600)
    assert _digest(build_demo_model(tmp_path / "a", spec)) == _digest(build_demo_model(tmp_path / "b", spec))


def test_demo_resolves_to_cached_llama_reward_model(demo_dir):
    assert resolve_model_path("demo") == str(demo_dir)
    tok = AutoTokenizer.from_pretrained(demo_dir)
    assert tok.pad_token is None  # like Llama-3: batching must not need one
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)["input_ids"]
    specials = tok.convert_ids_to_tokens(ids)
    assert specials[:2] == ["<|begin_of_text|>", "<|start_header_id|>"] and specials[-1] == "<|eot_id|>"
    assert "meaningless" in (demo_dir / "README.md").read_text()


def test_engine_path_imports_no_ray_or_fastapi():
    code = ("import sys, rmcluster.engine, rmcluster.pipeline, rmcluster.cli; "
            "bad=[m for m in ('ray','fastapi','starlette') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
