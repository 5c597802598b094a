"""Codabench scoring step: /app/input/res + /app/input/ref -> /app/output/scores.json.

Thin by design: all logic is in `e2lmc.scoring`. The bundle ships a copy of `e2lmc/`
beside this file; E2LMC_APP_ROOT replaces /app for local runs.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2lmc.cli import main  # noqa: E402

root = Path(os.environ.get("E2LMC_APP_ROOT", "/app"))
raise SystemExit(main(["score", "--res", str(root / "input" / "res"),
                       "--ref", str(root / "input" / "ref"),
                       "--output", str(root / "output")]))
