"""Step 1 of bench/gpu_check.sh: the machine, the stack, and what attention kernels it offers."""

from __future__ import annotations

import inspect
import platform
import subprocess
import sys


def main() -> None:
    import torch
    import transformers

    dry = "--dry-run" in sys.argv
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    try:
        import pydantic

        print(f"pydantic {pydantic.VERSION}")
    except ImportError:
        print("pydantic MISSING (carry the wheels: bench/gpu_wheels.sh)")
    try:
        from torch.nn.attention.varlen import varlen_attn

        print(f"varlen_attn{inspect.signature(varlen_attn)}")
    except ImportError as err:
        print(f"varlen_attn absent: {err}")
    from rmcluster.model_loading import flash_attn_available

    print(f"flash-attn usable: {flash_attn_available()}")
    if dry:
        print("dry run: stopping before the first CUDA call")
        return
    print(f"cuda {torch.version.cuda}, device {torch.cuda.get_device_name(0)}, "
          f"capability {torch.cuda.get_device_capability(0)}")
    print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
