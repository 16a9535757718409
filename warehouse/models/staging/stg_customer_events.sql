-- staging.stg_customer_events
-- Grain: one row per distinct customer event (xid), typed and flattened.
--
-- Incremental. A run reads only the raw rows of loads (_dlt_load_id) it has not staged before,
-- recorded in meta.stg_customer_events_loads; loads may arrive in any order, so there is no
-- high-water mark that could skip one. All new loads of a run form one batch.
--
-- First delivery wins, exactly: of all deliveries of an xid, the staged row is the one with the
-- earliest (received_at, landing_file, line_no), whatever order the loads come in. When a later
-- load brings an earlier delivery of an xid that is already staged, that delivery replaces the
-- staged row, so staging always equals a full rebuild from raw.
--
-- Every customer whose staged events changed in a batch (inserted rows, replaced rows, and the
-- previous customer of a replaced row) is listed in meta.stg_customer_events_changes, and the
-- batch becomes this model's watermark in meta.model_watermarks. Each model downstream keeps its
-- own watermark there and recomputes exactly the customers of the batches its upstream has
-- consumed since (macro consume_changed_customers, warehouse/macros.sql).
--
-- Attributes (warehouse/attributes.py: names, types and JSON paths, rendered into the column
-- lists below as `attributes`): absent_attributes lists those whose key is not in the payload,
-- usually none (an explicit null counts as present; a key under data.user is absent when
-- data.user is absent or null). An empty list rather than a struct of 20 booleans, which were a
-- noticeable share of this model's insert. Values that have the wrong type become NULL but still
-- count as present (the types are described in warehouse/attributes.py).
-- data.user.fcm_token is never copied.

create schema if not exists staging;

create schema if not exists meta;

create table if not exists meta.stg_customer_events_loads (
    _dlt_load_id varchar not null,
    batch_id bigint not null,
    staged_at timestamptz not null
);

create table if not exists meta.stg_customer_events_changes (
    batch_id bigint not null,
    customer_id varchar not null
);

-- the last batch each model has consumed (see the macros in warehouse/macros.sql)
create table if not exists meta.model_watermarks (
    model varchar not null,
    batch_id bigint not null,
    updated_at timestamptz not null
);

create table if not exists staging.stg_customer_events (
    xid varchar not null,
    customer_id varchar not null,
    action varchar not null,
    event_ts timestamptz not null,
    {%- for a in attributes %}
    {{ a.name }} {{ a.sql_type }},
    {%- endfor %}
    absent_attributes varchar[] not null,
    received_at timestamptz,
    landing_file varchar,
    line_no bigint
);

create or replace temp table stg_customer_events__batch as
with staged_loads as (
    select batch_id from meta.stg_customer_events_loads
),

final as (
    select coalesce(max(batch_id), 0) + 1 as batch_id from staged_loads
)

select * from final;

create or replace temp table stg_customer_events__new_loads as
with raw_loads as (
    select distinct _dlt_load_id
    from raw.customer_events
    where _dlt_load_id is not null
),

final as (
    select raw_loads._dlt_load_id
    from raw_loads
    anti join meta.stg_customer_events_loads as staged using (_dlt_load_id)
)

select * from final;

create or replace temp table stg_customer_events__winners as
with new_deliveries as (
    select
        rowid as raw_rowid,
        xid,
        customer_id,
        received_at,
        landing_file,
        line_no
    from raw.customer_events
    semi join stg_customer_events__new_loads using (_dlt_load_id)
    -- the loader only writes valid events; a row that is not one is left out rather than
    -- failing the run, and the raw-vs-staging reconciliation check reports it
    where
        xid is not null
        and customer_id is not null
        and event_ts is not null
        and regexp_full_match(action, 'customers\.(create|update|delete|snapshot)', 'i')
),

staged_deliveries as (
    select xid, customer_id, received_at, landing_file, line_no
    from staging.stg_customer_events
    semi join new_deliveries using (xid)
),

candidates as (
    select raw_rowid, xid, customer_id, received_at, landing_file, line_no, true as is_new
    from new_deliveries
    union all
    select null, xid, customer_id, received_at, landing_file, line_no, false as is_new
    from staged_deliveries
),

-- Most xids are delivered once: only the others need ordering. A hash aggregation finds them,
-- which is faster than sorting every candidate by its long string keys; a load of
-- redeliveries only pays for both.
repeated_xids as (
    select xid
    from candidates
    group by xid
    having count(*) > 1
),

-- the same order as a full rebuild; an exact tie with the staged row is the same line of the
-- same file, so the staged row stays
first_deliveries as (
    select *
    from candidates
    anti join repeated_xids using (xid)
    union all
    (
        select *
        from candidates
        semi join repeated_xids using (xid)
        qualify row_number() over (
            partition by xid order by received_at, landing_file, line_no, is_new
        ) = 1
    )
),

final as (
    select
        first_deliveries.raw_rowid,
        first_deliveries.xid,
        first_deliveries.customer_id,
        staged_deliveries.customer_id as replaced_customer_id,
        staged_deliveries.xid is not null as replaces_staged_row
    from first_deliveries
    left join staged_deliveries using (xid)
    where first_deliveries.is_new
)

select * from final;

insert into meta.stg_customer_events_loads
select
    stg_customer_events__new_loads._dlt_load_id,
    stg_customer_events__batch.batch_id,
    now() as staged_at
from stg_customer_events__new_loads
cross join stg_customer_events__batch;

insert into meta.stg_customer_events_changes
with changed_customers as (
    select customer_id from stg_customer_events__winners
    union
    select replaced_customer_id from stg_customer_events__winners where replaces_staged_row
),

final as (
    select stg_customer_events__batch.batch_id, changed_customers.customer_id
    from changed_customers
    cross join stg_customer_events__batch
)

select * from final;

delete from meta.model_watermarks
where
    model = 'staging.stg_customer_events'
    and exists (select 1 from stg_customer_events__new_loads);

insert into meta.model_watermarks
select
    'staging.stg_customer_events' as model,
    stg_customer_events__batch.batch_id,
    now() as updated_at
from stg_customer_events__batch
where exists (select 1 from stg_customer_events__new_loads);

delete from staging.stg_customer_events
where xid in (select xid from stg_customer_events__winners where replaces_staged_row);

insert into staging.stg_customer_events
with winners as (
    select deliveries.*
    from raw.customer_events as deliveries
    semi join stg_customer_events__winners as winner on deliveries.rowid = winner.raw_rowid
),

extracted as (
    select
        *,
        -- one parse per payload; the order here is the order of the columns below
        json_extract(payload, [
            {%- for a in attributes %}
            '{{ a.json_path }}'{{ "," if not loop.last }}
            {%- endfor %}
        ]) as attribute_json
    from winners
),

final as (
    select
        xid,
        customer_id,
        upper(split_part(action, '.', 2)) as action,
        event_ts,
        {%- for a in attributes %}
        {%- set value = "attribute_json[" ~ loop.index ~ "]" %}
        {%- if a.sql_type == "boolean" %}
        if(json_type({{ value }}) = 'BOOLEAN', cast({{ value }} ->> '$' as boolean), null)
            as {{ a.name }},
        {%- elif a.sql_type == "timestamptz" %}
        try(epoch_ms(try_cast({{ value }} ->> '$' as bigint)) at time zone 'UTC')
            as {{ a.name }},
        {%- else %}
        {{ value }} ->> '$' as {{ a.name }},
        {%- endif %}
        {%- endfor %}
        -- the usual payload carries every key: only the others build the list
        case
            when
                {%- for a in attributes %}
                {{ "and " if not loop.first }}attribute_json[{{ loop.index }}] is not null
                {%- endfor %}
                then []
            else list_filter(
                [
                    {%- for a in attributes %}
                    if(attribute_json[{{ loop.index }}] is null, '{{ a.name }}', null)
                    {{- "," if not loop.last }}
                    {%- endfor %}
                ],
                lambda attribute: attribute is not null
            )
        end as absent_attributes,
        received_at,
        landing_file,
        line_no
    from extracted
)

select * from final;

drop table stg_customer_events__winners;

drop table stg_customer_events__new_loads;

drop table stg_customer_events__batch;
