"""`memrl <args>` in this process, then the peak GPU memory torch saw written to $MEMRL_PEAK_DIR (gpu_check.py).

Under torchrun each rank writes `peak.<rank>.json`: max_memory_allocated and max_memory_reserved in GiB
(zeros without CUDA).
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path


def _record() -> None:
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    gib = float(1 << 30)
    rec = {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / gib if cuda else 0.0,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / gib if cuda else 0.0,
    }
    out = Path(os.environ.get("MEMRL_PEAK_DIR", "."))
    (out / f"peak.{os.environ.get('RANK', '0')}.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    import sys

    from memrl.cli import main

    atexit.register(_record)
    main(sys.argv[1:])
