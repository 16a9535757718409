"""warehouse.runner.declare_model: a model file's config, ref and source calls, and the errors
that name what a file declares wrong."""

from __future__ import annotations

import re

import pytest

from warehouse import runner

VALID = """{{ config(materialized='%s', unique_key=%r, description='d') }}
select customer_id from {{ %s }}
"""


def write(tmp_path, text, schema="analytics", name="my_model"):
    path = tmp_path / schema / f"{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_declaration_names_its_table_materialization_and_lineage(tmp_path):
    path = write(tmp_path, VALID % ("incremental", "customer_id", "ref('dim_customer')"))

    model = runner.declare_model(path)

    assert (model.table, model.materialized, model.unique_key) == (
        "analytics.my_model",
        "incremental",
        "customer_id",
    )
    assert (model.refs, model.sources, model.reads) == (
        ("analytics.dim_customer",),
        (),
        ("analytics.dim_customer",),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VALID % ("snapshot", None, "ref('dim_customer')"), "materialized must be one of"),
        ("{{ config(materialized='view') }} select 1", "a description is required"),
        (
            "{{ config(materialized='view', description='d', unique=1) }} select 1",
            "unknown config",
        ),
        (VALID % ("view", None, "ref('dim_customers')"), "ref('dim_customers') names no model"),
        (VALID % ("view", None, "source('raw', 'orders')"), "names no source"),
        (
            VALID % ("incremental", None, "source('raw', 'customer_events')"),
            "needs a unique_key",
        ),
        (
            VALID % ("incremental", "xid", "ref('dim_customer')"),
            "incremental by customer: unique_key customer_id",
        ),
        (
            "{{ config(materialized='incremental', unique_key='customer_id', description='d') }}"
            " select customer_id from {{ ref('dim_customer') }}"
            " join {{ ref('stg_customer_events') }} using (customer_id)",
            "reads either one source or one model",
        ),
    ],
)
def test_a_wrong_declaration_is_refused_with_the_reason(tmp_path, text, message):
    path = write(tmp_path, text)

    with pytest.raises(
        runner.ModelDeclarationError, match=rf"my_model\.sql: .*{re.escape(message)}"
    ):
        runner.declare_model(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ config(model='dim_customers', description='d') }} select 1", "must name a model"),
        ("{{ config(model='dim_customer') }} select 1", "a description is required"),
        ("{{ config(model='dim_customer', description='d', severity='warn') }}", "unknown config"),
    ],
)
def test_a_wrong_check_declaration_is_refused_with_the_reason(tmp_path, text, message):
    path = write(tmp_path, text, schema="checks", name="my_check")

    with pytest.raises(runner.ModelDeclarationError, match=rf"my_check\.sql: .*{message}"):
        runner.declare_check(path)
