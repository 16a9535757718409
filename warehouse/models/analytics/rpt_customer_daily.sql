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
-- Incremental: every count is a sum over customers, so meta.rpt_customer_daily_contributions
-- keeps each customer's share per day (active as +1 the day a live version starts, -1 the day it
-- ends) and meta.rpt_customer_daily_totals their sums per day. A run replaces the shares of the
-- customers analytics.dim_customer recomputed since this model's watermark, moves the totals by
-- the difference, and rebuilds this table from the totals (one row per day).

create table if not exists analytics.rpt_customer_daily (
    day date not null,
    new_customers bigint not null,
    updated_customers bigint not null,
    deleted_customers bigint not null,
    active_customers bigint not null
);

create table if not exists meta.rpt_customer_daily_contributions (
    customer_id varchar not null,
    day date not null,
    new_customers integer not null,
    updated_customers integer not null,
    deleted_customers integer not null,
    active_change integer not null
);

create table if not exists meta.rpt_customer_daily_totals (
    day date not null,
    new_customers bigint not null,
    updated_customers bigint not null,
    deleted_customers bigint not null,
    active_change bigint not null
);

{{ macros.consume_changed_customers(
    'analytics.rpt_customer_daily',
    upstream='analytics.dim_customer',
    into='rpt_customer_daily__changed_customers',
) }};

create or replace temp table rpt_customer_daily__new_contributions as
with versions as (
    select
        customer_id,
        version,
        is_deleted,
        cast(timezone('UTC', valid_from) as date) as start_day,
        cast(timezone('UTC', valid_to) as date) as end_day
    from analytics.dim_customer
    semi join rpt_customer_daily__changed_customers using (customer_id)
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

select * from final;

create or replace temp table rpt_customer_daily__new_totals as
with old_contributions as (
    select *
    from meta.rpt_customer_daily_contributions
    semi join rpt_customer_daily__changed_customers using (customer_id)
),

differences as (
    select day, new_customers, updated_customers, deleted_customers, active_change
    from rpt_customer_daily__new_contributions
    union all
    select
        day,
        -new_customers,
        -updated_customers,
        -deleted_customers,
        -active_change
    from old_contributions
),

touched_days as (
    select distinct day from differences
),

old_totals as (
    select *
    from meta.rpt_customer_daily_totals
    semi join touched_days using (day)
),

summed as (
    select
        day,
        sum(new_customers) as new_customers,
        sum(updated_customers) as updated_customers,
        sum(deleted_customers) as deleted_customers,
        sum(active_change) as active_change
    from (
        select * from differences
        union all
        select * from old_totals
    )
    group by day
),

final as (
    select
        day,
        cast(new_customers as bigint) as new_customers,
        cast(updated_customers as bigint) as updated_customers,
        cast(deleted_customers as bigint) as deleted_customers,
        cast(active_change as bigint) as active_change
    from summed
)

select * from final;

delete from meta.rpt_customer_daily_contributions
where customer_id in (select customer_id from rpt_customer_daily__changed_customers);

insert into meta.rpt_customer_daily_contributions
select * from rpt_customer_daily__new_contributions;

delete from meta.rpt_customer_daily_totals
where day in (select day from rpt_customer_daily__new_totals);

insert into meta.rpt_customer_daily_totals
select *
from rpt_customer_daily__new_totals
where new_customers <> 0 or updated_customers <> 0 or deleted_customers <> 0 or active_change <> 0;

delete from analytics.rpt_customer_daily;

insert into analytics.rpt_customer_daily
with totals as (
    select * from meta.rpt_customer_daily_totals
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
        coalesce(totals.new_customers, 0) as new_customers,
        coalesce(totals.updated_customers, 0) as updated_customers,
        coalesce(totals.deleted_customers, 0) as deleted_customers,
        cast(sum(coalesce(totals.active_change, 0)) over (order by days.day) as bigint)
            as active_customers
    from days
    left join totals using (day)
)

select * from final
order by day;

drop table rpt_customer_daily__new_totals;

drop table rpt_customer_daily__new_contributions;

drop table rpt_customer_daily__changed_customers;
