-- staging.stg_customer_events
-- Grain: one row per distinct customer event (xid), typed and flattened.
--
-- Incremental by load. A run reads only the raw rows of loads (_dlt_load_id) it has not staged
-- before (new_loads; meta.stg_customer_events_loads records the staged ones): loads may arrive
-- in any order, so there is no high-water mark that could skip one. All new loads of a run form
-- one batch.
--
-- First delivery wins, exactly: of all deliveries of an xid, the staged row is the one with the
-- earliest (received_at, landing_file, line_no), whatever order the loads come in. When a later
-- load brings an earlier delivery of an xid that is already staged, that delivery replaces the
-- staged row, so staging always equals a full rebuild from raw.
--
-- The rows this select returns replace the staged rows of the same xid. Every customer whose
-- staged events changed in a batch (inserted rows, replaced rows, and the previous customer of a
-- replaced row) is listed in meta.customer_changes, and the batch becomes this model's watermark
-- in meta.model_watermarks; each model downstream recomputes exactly those customers
-- (warehouse/materializations.py).
--
-- Attributes (warehouse/attributes.py: names, types and JSON paths, rendered into the column
-- lists below): absent_attributes lists those whose key is not in the payload,
-- usually none (an explicit null counts as present; a key under data.user is absent when
-- data.user is absent or null). An empty list rather than a struct of 20 booleans, which were a
-- noticeable share of this model's insert. Values that have the wrong type become NULL but still
-- count as present (the types are described in warehouse/attributes.py).
-- data.user.fcm_token is never copied.

{{ config(
    materialized='incremental',
    unique_key='xid',
    not_null=['xid', 'customer_id', 'action', 'event_ts', 'absent_attributes'],
    description='One row per distinct xid (first delivery wins), typed and flattened.',
) }}

with new_deliveries as (
    select
        rowid as raw_rowid,
        xid,
        customer_id,
        received_at,
        landing_file,
        line_no
    from {{ source('raw', 'customer_events') }}
    semi join {{ new_loads }} using (_dlt_load_id)
    -- the loader only writes valid events; a row that is not one is left out rather than
    -- failing the run, and the raw-vs-staging reconciliation check reports it
    where
        xid is not null
        and customer_id is not null
        and event_ts is not null
        and regexp_full_match(action, 'customers\.(create|update|delete|snapshot)', 'i')
),

-- the staged deliveries of the same xids (none on the first run, which creates the table)
staged_deliveries as (
    select xid, customer_id, received_at, landing_file, line_no
    {%- if is_incremental %}
    from {{ this }}
    semi join new_deliveries using (xid)
    {%- else %}
    from new_deliveries
    where false
    {%- endif %}
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

new_winners as (
    select raw_rowid
    from first_deliveries
    where is_new
),

winners as (
    select deliveries.*
    from {{ source('raw', 'customer_events') }} as deliveries
    semi join new_winners on deliveries.rowid = new_winners.raw_rowid
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

select * from final
