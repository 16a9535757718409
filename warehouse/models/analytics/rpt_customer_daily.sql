-- analytics.rpt_customer_daily
-- Grain: one row per UTC day, every day from the first to the last day on which a version of
-- analytics.dim_customer starts.
--
-- new_customers: customers whose first version starts that day (also when it is a tombstone,
-- i.e. the history starts with a DELETE). updated_customers: customers for which a later,
-- non-deleted version starts that day (re-opening after a delete included; a customer created
-- and changed on the same day counts in both). deleted_customers: customers for which a
-- tombstone starts that day. active_customers: customers whose version in force at the end of
-- the day (the last version starting before the next midnight) exists and is not deleted.
--
-- Rebuilt on every run from the customers' shares (intermediate.int_customer_daily_contributions,
-- incremental), which are small next to the dimension: a sum by day and a running sum.

{{ config(
    materialized='table',
    not_null=['day', 'new_customers', 'updated_customers', 'deleted_customers', 'active_customers'],
    description='One row per UTC day: new, updated, deleted and active customers.',
) }}

with contributions as (
    select * from {{ ref('int_customer_daily_contributions') }}
),

totals as (
    select
        day,
        sum(new_customers) as new_customers,
        sum(updated_customers) as updated_customers,
        sum(deleted_customers) as deleted_customers,
        sum(active_change) as active_change
    from contributions
    group by day
),

-- every version start counts as new, updated or deleted, so these are the version days
version_days as (
    select day
    from totals
    where new_customers + updated_customers + deleted_customers > 0
),

days as (
    select cast(unnest(generate_series(min(day), max(day), interval 1 day)) as date) as day
    from version_days
),

final as (
    select
        days.day,
        cast(coalesce(totals.new_customers, 0) as bigint) as new_customers,
        cast(coalesce(totals.updated_customers, 0) as bigint) as updated_customers,
        cast(coalesce(totals.deleted_customers, 0) as bigint) as deleted_customers,
        cast(sum(coalesce(totals.active_change, 0)) over (order by days.day) as bigint)
            as active_customers
    from days
    left join totals using (day)
)

select * from final
order by day
