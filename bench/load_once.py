"""Run `flavours load` once in this process and print its timings as JSON (used by bench_load).

Settings come from FLAVOURS_* like the command. Printed: wall seconds, when the run finished
(monotonic clock), each step's and each model's own seconds (in the order the steps ran) and the
load summary.
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

from core.settings import Settings
from pipelines.run import one_shot_collector, run_load


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` would include the parent's RSS at
    fork, which Linux carries across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    with one_shot_collector():  # as `flavours load` does
        report = measured_load()
        print(json.dumps(report))
        sys.stdout.flush()


def measured_load() -> dict:
    settings = Settings()
    started = time.perf_counter()
    result, summary = run_load(settings)
    wall = time.perf_counter() - started
    finished_at = time.monotonic()  # the same clock in every process (Linux)
    models = {}
    for node in result.dagster_run.step_keys_to_execute or []:
        for materialization in result.asset_materializations_for_node(node):
            seconds = materialization.metadata.get("seconds")
            if seconds is not None:
                models[materialization.asset_key.to_user_string()] = seconds.value
    steps = {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }
    report = {
        "wall_s": wall,
        "finished_at": finished_at,
        "models_s": models,
        "steps_s": steps,
        "peak_mib": peak_rss_mib(),
        "summary": dataclasses.asdict(summary),
    }
    return report


if __name__ == "__main__":
    main()
