"""Codabench ingestion entry point: the submission over the task's checkpoint grid.

Thin by design: all logic lives in the `e2lmc` package (bundled beside this file or
installed in the image). Paths follow the Codabench prediction step; E2LMC_APP_ROOT
replaces "/app" for a local emulation of the worker.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # a bundled e2lmc/ copy wins over an installed one


def main() -> int:
    from e2lmc.cli import main as cli

    app = Path(os.environ.get("E2LMC_APP_ROOT", "/app"))
    args = ["ingest",
            "--submission", str(app / "ingested_program"),
            "--input-data", str(app / "input_data"),
            "--output", str(app / "output"),
            "--data-dir", str(app / "data")]
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
