"""This project's Python log lines in the Dagster run's logs, whatever the instance.

The loader's warnings (a damaged landed object, rows of an interrupted load discarded) and its
progress come from the Python loggers ``connector``, ``pipelines`` and ``warehouse``, some from
worker threads. Dagster puts a Python logger's lines in a run's logs only when the instance's
``dagster.yaml`` names it under ``python_logs: managed_python_loggers``; otherwise they reach
the run's captured stderr at best. During each asset's work ``project_logs_in_run`` forwards
them to ``context.log`` instead, at ``FLAVOURS_LOG_LEVEL``, so a run started by ``flavours
load``, ``dagster dev``, the sensor or the schedule shows them beside the step that logged
them. A line the instance already captures (its logger or an ancestor, ``root`` included, is
managed) is not forwarded, so no line appears twice.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext

from core.logs import PROJECT_LOGGERS


def managed_by_instance(logger_name: str, managed: Collection[str]) -> bool:
    """Whether Dagster already captures ``logger_name``'s records: the logger, one of its
    ancestors or ``root`` is among ``managed`` (``managed_python_loggers``)."""
    if "root" in managed:
        return True
    parts = logger_name.split(".")
    return any(".".join(parts[:end]) in managed for end in range(1, len(parts) + 1))


class RunLogHandler(logging.Handler):
    """Writes each record it gets to a run's log (``context.log``), at the record's level."""

    def __init__(self, run_log: logging.Logger, managed: Collection[str]) -> None:
        super().__init__()
        self._run_log = run_log
        self._managed = frozenset(managed)

    def emit(self, record: logging.LogRecord) -> None:
        if managed_by_instance(record.name, self._managed):
            return
        try:
            self._run_log.log(record.levelno, self.format(record))
        except Exception:  # a logging failure must not fail the load
            self.handleError(record)


@contextmanager
def project_logs_in_run(context: AssetExecutionContext, level: str) -> Iterator[None]:
    """During the block, this project's Python loggers log at ``level`` (``FLAVOURS_LOG_LEVEL``)
    and their records go to the run's logs too; both are undone when the block ends.

    The level is set here rather than by Dagster's ``python_logs: python_log_level``, which
    would set it for the rest of the process.
    """
    managed = context.instance.managed_python_loggers
    handler = RunLogHandler(context.log, managed)
    loggers = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    forwarding = [logger for logger in loggers if not managed_by_instance(logger.name, managed)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level.upper())
    for logger in forwarding:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in forwarding:
            logger.removeHandler(handler)
        for logger, before in zip(loggers, levels, strict=True):
            logger.setLevel(before)
