"""The models' lineage (warehouse.runner.MODEL_SPECS, from their ``ref`` and ``source`` calls;
the Dagster assets are built from it) is every table their SQL reads: none is named directly."""

from __future__ import annotations

import re

import pytest

from warehouse import runner

TABLE = re.compile(r"\b(raw|staging|intermediate|analytics)\.([a-z_]+)\b")
COMMENT = re.compile(r"--[^\n]*")


@pytest.mark.parametrize("model", runner.MODEL_SPECS, ids=lambda model: model.name)
def test_each_model_reads_exactly_the_tables_it_refers_to(model):
    sql = COMMENT.sub("", runner.render(runner.model_path(model.name)))
    own = runner.model_table(model.name)

    read = {f"{schema}.{table}" for schema, table in TABLE.findall(sql)} - {own}

    assert read == set(model.reads)


def test_models_come_after_the_models_they_read():
    built: set[str] = set()
    for model in runner.MODEL_SPECS:
        assert {table for table in model.reads if not table.startswith("raw.")} <= built
        built.add(runner.model_table(model.name))


@pytest.mark.parametrize("check", runner.CHECK_SPECS, ids=lambda check: check.name)
def test_each_check_reads_exactly_the_tables_it_refers_to_and_checks_one_of_them(check):
    sql = COMMENT.sub("", runner.render(check.path))

    read = {f"{schema}.{table}" for schema, table in TABLE.findall(sql)}

    assert read == set(check.reads)
    assert runner.model_table(check.model) in check.reads
