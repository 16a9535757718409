-- intermediate.int_customer_daily_contributions
-- Grain: one row per customer and UTC day on which one of its versions in
-- analytics.dim_customer starts or ends.
--
-- Each customer's share of analytics.rpt_customer_daily's counts: every count there is a sum over
-- customers, so the report is the sum of these rows by day. new_customers, updated_customers and
-- deleted_customers are 1 when that day starts the customer's first version, a later
-- non-deleted version, or a tombstone; active_change is +1 the day a live version starts and -1
-- the day it ends (the report's running sum of it is the active customers).
--
-- Incremental by customer: the customers analytics.dim_customer recomputed since this model's
-- watermark get their shares recomputed (changed_customers).

{{ config(
    materialized='incremental',
    unique_key='customer_id',
    not_null=[
        'customer_id', 'day', 'new_customers', 'updated_customers', 'deleted_customers',
        'active_change',
    ],
    description="Each customer's share of the daily report, by day (incremental by customer).",
) }}

with versions as (
    select
        customer_id,
        version,
        is_deleted,
        cast(timezone('UTC', valid_from) as date) as start_day,
        cast(timezone('UTC', valid_to) as date) as end_day
    from {{ ref('dim_customer') }}
    semi join {{ changed_customers }} using (customer_id)
),

-- what each version changes: its start day counts it as new, updated or deleted, and a live
-- version counts as active from the day it starts until the day the next version replaces it
changes as (
    select
        customer_id,
        start_day as day,
        version = 1 as is_new,
        version > 1 and not is_deleted as is_update,
        is_deleted,
        if(is_deleted, 0, 1) as active_change
    from versions
    union all
    select
        customer_id,
        end_day as day,
        false as is_new,
        false as is_update,
        false as is_deleted,
        -1 as active_change
    from versions
    where not is_deleted and end_day is not null
),

final as (
    select
        customer_id,
        day,
        cast(bool_or(is_new) as integer) as new_customers,
        cast(bool_or(is_update) as integer) as updated_customers,
        cast(bool_or(is_deleted) as integer) as deleted_customers,
        cast(sum(active_change) as integer) as active_change
    from changes
    group by customer_id, day
)

select * from final
