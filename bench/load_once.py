"""Run `flavours load` once in this process and print its timings as JSON (used by bench_load).

Settings come from FLAVOURS_* like the command. Printed: wall seconds, each model's own
seconds (from its materialization metadata) and the load summary.
"""

import dataclasses
import json
import sys
import time

from connector.settings import Settings
from pipelines.run import run_load


def main() -> None:
    settings = Settings()
    started = time.perf_counter()
    result, summary = run_load(settings)
    wall = time.perf_counter() - started
    models = {}
    for node in result.dagster_run.step_keys_to_execute or []:
        for materialization in result.asset_materializations_for_node(node):
            seconds = materialization.metadata.get("seconds")
            if seconds is not None:
                models[materialization.asset_key.to_user_string()] = seconds.value
    steps = (
        {
            stats.step_key: stats.end_time - stats.start_time
            for stats in result.dagster_run_stats_steps()
            if stats.end_time and stats.start_time
        }
        if hasattr(result, "dagster_run_stats_steps")
        else {}
    )
    print(
        json.dumps(
            {
                "wall_s": wall,
                "models_s": models,
                "steps_s": steps,
                "summary": dataclasses.asdict(summary),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
