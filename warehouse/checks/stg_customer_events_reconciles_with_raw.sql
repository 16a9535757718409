-- Offending rows: every distinct xid of raw.customer_events that is missing from
-- staging.stg_customer_events, every staged xid that raw does not hold, and every xid staged
-- more than once.

{{ config(
    model='stg_customer_events',
    description="every distinct valid xid in raw.customer_events is in staging",
) }}

with raw_xids as (
    select distinct xid from {{ source('raw', 'customer_events') }}
),

staged_xids as (
    select xid, count(*) as staged_rows
    from {{ ref('stg_customer_events') }}
    group by xid
),

final as (
    select
        coalesce(raw_xids.xid, staged_xids.xid) as xid,
        case
            when staged_xids.xid is null then 'in raw, not staged'
            when raw_xids.xid is null then 'staged, not in raw'
            else 'staged more than once'
        end as problem
    from raw_xids
    full join staged_xids using (xid)
    where raw_xids.xid is null or staged_xids.xid is null or staged_xids.staged_rows > 1
)

select * from final
order by xid;
