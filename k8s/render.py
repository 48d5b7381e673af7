"""Write the production Serve config into k8s/rayservice.yaml's `serveConfigV2`, verbatim.

    python k8s/render.py           # rewrite the embedded block from serve/configs/
    python k8s/render.py --check   # exit 1 if it has drifted (the tests run this check)

The block is replaced as text, so the manifest's comments and layout stay as written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAYSERVICE = ROOT / "k8s" / "rayservice.yaml"
SERVE_CONFIG = ROOT / "serve" / "configs" / "skywork-reward-llama-3.1-8b.yaml"
KEY = "  serveConfigV2: |"
INDENT = " " * 4


def render(manifest: str, serve_config: str) -> str:
    lines = manifest.splitlines()
    start = lines.index(KEY) + 1
    end = start
    # The block ends at the first non-blank line indented no deeper than the key.
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(INDENT)):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    block = [INDENT + line if line.strip() else "" for line in serve_config.rstrip("\n").splitlines()]
    return "\n".join(lines[:start] + block + lines[end:]) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="fail if the manifest is out of date")
    check = args.parse_args(argv).check
    current = RAYSERVICE.read_text()
    wanted = render(current, SERVE_CONFIG.read_text())
    if current == wanted:
        return 0
    if check:
        print(f"{RAYSERVICE} is out of date with {SERVE_CONFIG}; run: python k8s/render.py", file=sys.stderr)
        return 1
    RAYSERVICE.write_text(wanted)
    print(f"wrote {RAYSERVICE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
