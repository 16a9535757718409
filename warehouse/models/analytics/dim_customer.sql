-- analytics.dim_customer
-- Grain: one row per customer version (SCD type 2 over event time, not arrival time).
--
-- Events of a customer are ordered by (event_ts, SNAPSHOT < CREATE < UPDATE < DELETE, xid):
-- a backfill snapshot (staging action SNAPSHOT, the whole customer as the API listed it) is an
-- event like the others, and a webhook at the same instant wins over it. Each event's
-- payload is applied on top of the state just before it: an attribute takes the value of the
-- latest event whose payload carried its key (staging's absent_attributes), so an absent key
-- keeps the previous value and an explicit null clears it. The state after the last event of an
-- instant is that instant's state; it becomes a new version only when an attribute (compared
-- through attributes_hash) or the deleted state differs from the previous instant's. A DELETE
-- gives a tombstone (is_deleted) with its payload applied too; a later CREATE or UPDATE re-opens
-- the customer with the attributes carried over. The first event of a customer, whatever its
-- action, starts the history.
--
-- Cost: an event that carries every key (the usual case: Flavours sends the whole customer) is
-- its own state, so only customers with an event lacking a key go through the 20 carry-forward
-- windows. The state of every event is hashed once; the windows that find instants and versions
-- sort keys and hashes only, and the attributes are joined back once per version.
--
-- The attribute columns are rendered from warehouse/attributes.py (in column order).
--
-- customer_sk = md5(customer_id || '|' || epoch microseconds of valid_from): the same in every
-- incremental run and full rebuild. attributes_hash = md5 of the attributes as a JSON array in
-- column order, timestamps as epoch microseconds so that it does not depend on the time zone.
--
-- Incremental by customer: only the customers whose staged events changed in batches after this
-- model's watermark are recomputed (changed_customers, see staging.stg_customer_events): their
-- rows are replaced by their whole history rebuilt from staging, so the cost follows the
-- customers with new events.

{{ config(
    materialized='incremental',
    unique_key='customer_id',
    not_null=[
        'customer_sk', 'customer_id', 'version', 'valid_from', 'is_current', 'is_deleted',
        'change_action', 'source_xid', 'attributes_hash',
    ],
    description='SCD type 2 customer dimension by event time: one row per customer version.',
) }}

-- not materialized: both are read twice, and rescanning beats holding 1M wide rows in memory
with staged_events as not materialized (
    select
        rowid as event_row,
        *,
        case action
            when 'SNAPSHOT' then 0 when 'CREATE' then 1 when 'UPDATE' then 2 when 'DELETE' then 3
        end as action_rank
    from {{ ref('stg_customer_events') }}
    semi join {{ changed_customers }} using (customer_id)
),

-- A backfill snapshot that is a customer's first event stands for the customer since its
-- created_at (so that it is counted new on the right day); any other snapshot is an event at
-- the time it was observed.
customers_with_snapshots as (
    select distinct customer_id
    from staged_events
    where action = 'SNAPSHOT'
),

events as not materialized (
    select * from staged_events
    anti join customers_with_snapshots using (customer_id)
    union all
    (
        select
            * exclude (first_event) replace (
                if(
                    action = 'SNAPSHOT' and first_event, least(event_ts, created_at), event_ts
                ) as event_ts
            )
        from (
            select
                *,
                row_number() over (
                    partition by customer_id order by event_ts, action_rank, xid
                ) = 1 as first_event
            from staged_events
            semi join customers_with_snapshots using (customer_id)
        )
    )
),

-- Flavours sends the whole customer, so usually every event carries every key and its state is
-- simply its own values. Only customers with an event lacking a key need the carry-forward.
customers_with_absent_keys as (
    select distinct customer_id
    from events
    where len(absent_attributes) > 0
),

complete_states as (
    select
        event_row,
        customer_id,
        event_ts,
        action_rank,
        xid,
        action,
        {%- for a in attributes %}
        {{ a.name }}{{ "," if not loop.last }}
        {%- endfor %}
    from events
    anti join customers_with_absent_keys using (customer_id)
),

-- what each event carries: {'v': value} for a key in its payload, null for an absent key
carried as (
    select
        event_row,
        customer_id,
        event_ts,
        action_rank,
        xid,
        action,
        {%- for a in attributes %}
        if(list_contains(absent_attributes, '{{ a.name }}'), null, {'v': {{ a.name }}})
            as {{ a.name }}{{ "," if not loop.last }}
        {%- endfor %}
    from events
    semi join customers_with_absent_keys using (customer_id)
),

-- each attribute after this event: the value carried by the latest event that had its key
carried_forward as (
    select
        event_row,
        customer_id,
        event_ts,
        action_rank,
        xid,
        action,
        {%- for a in attributes %}
        last_value({{ a.name }} ignore nulls) over events_so_far as {{ a.name }}
        {{- "," if not loop.last }}
        {%- endfor %}
    from carried
    window events_so_far as (
        partition by customer_id
        order by event_ts, action_rank, xid
        rows between unbounded preceding and current row
    )
),

filled_states as (
    select
        event_row,
        customer_id,
        event_ts,
        action_rank,
        xid,
        action,
        {%- for a in attributes %}
        {{ a.name }}.v as {{ a.name }}{{ "," if not loop.last }}
        {%- endfor %}
    from carried_forward
),

-- the state after each event, with its attributes as a JSON array in column order, timestamps
-- as epoch microseconds
event_states as not materialized (
    select
        *,
        md5(
            cast(
                json_array(
                    {%- for a in attributes %}
                    {%- if a.sql_type == "timestamptz" %}
                    epoch_us({{ a.name }}){{ "," if not loop.last }}
                    {%- else %}
                    {{ a.name }}{{ "," if not loop.last }}
                    {%- endif %}
                    {%- endfor %}
                ) as varchar
            )
        ) as attributes_hash
    from (
        select * from complete_states
        union all
        select * from filled_states
    )
),

-- The windows below sort only keys and hashes; the attributes join back at the end.
-- At most one version per customer and instant: the last of the tied events decides it.
instants as (
    select customer_id, event_ts, event_row, action, attributes_hash
    from event_states
    qualify
        lead(event_ts) over (partition by customer_id order by event_ts, action_rank, xid)
            is distinct from event_ts
),

compared as (
    select
        *,
        lag(attributes_hash) over previous_instant as previous_attributes_hash,
        lag(action) over previous_instant as previous_action
    from instants
    window previous_instant as (partition by customer_id order by event_ts)
),

versions as (
    select
        customer_id,
        event_ts,
        event_row,
        action,
        attributes_hash,
        row_number() over customer_versions as version,
        lead(event_ts) over customer_versions as valid_to
    from compared
    where
        previous_attributes_hash is null
        or attributes_hash <> previous_attributes_hash
        or (action = 'DELETE') <> (previous_action = 'DELETE')
    window customer_versions as (partition by customer_id order by event_ts)
),

final as (
    select
        md5(versions.customer_id || '|' || epoch_us(versions.event_ts)) as customer_sk,
        versions.customer_id,
        versions.version,
        versions.event_ts as valid_from,
        versions.valid_to,
        versions.valid_to is null as is_current,
        versions.action = 'DELETE' as is_deleted,
        versions.action as change_action,
        event_states.xid as source_xid,
        {%- for a in attributes %}
        event_states.{{ a.name }},
        {%- endfor %}
        versions.attributes_hash
    from versions
    inner join event_states using (event_row)
)

select * from final
