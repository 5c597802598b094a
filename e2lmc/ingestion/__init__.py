"""The ingestion program: a submission over the checkpoint grid (see DESIGN.md).

unpack      safe staging of a zip or folder (caps and refusals)
patch       task files out of the official `evaluation.patch`
submission  the two formats, metadata.yaml, fingerprint, `make-submission`
taskyaml    the task YAML as data: `!function` / `include:` stay in the task folder
taskproc    the runner's handle on the task process (limits, protocol checks)
child       the task process itself: the only place participant code runs
wire        framed JSON between the two
validate    checks before any checkpoint is loaded
run         the grid: order, resume, time budget, output files
"""
