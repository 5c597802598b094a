"""One ingestion, the same call in every platform profile (see tests/profiles.py).

`root` calls `ingest_call` in the test process; `user` and `worker` run this file as a
command, as uid 65534 or inside the worker's container:

    python tests/profile_driver.py SUBMISSION INPUT_DATA OUTPUT LIMITS_JSON DOC_JSON

LIMITS_JSON holds the fields of `e2lmc.ingestion.taskproc.Limits`; the returned ingestion
document is written to DOC_JSON (a file of the test's own, never a pipe the task could
print into). The progress lines go to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ingest_call(submission: Path, input_data: Path, output: Path, limits: dict,
                log=print) -> dict:
    """The hostile tests' ingestion: the `hf` engine, the given Limits fields."""
    from e2lmc.ingestion.run import ingest
    from e2lmc.ingestion.taskproc import Limits

    return ingest(Path(submission), Path(input_data), Path(output), engine="hf",
                  limits=Limits(**limits), log=log)


def main(argv: list[str]) -> int:
    submission, input_data, output, limits, doc_path = argv
    doc = ingest_call(Path(submission), Path(input_data), Path(output), json.loads(limits),
                      log=lambda line: print(line, flush=True))
    Path(doc_path).write_text(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
