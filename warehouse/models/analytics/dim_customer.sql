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
-- customer_sk = md5(customer_id || '|' || epoch microseconds of valid_from): the same in every
-- incremental run and full rebuild. attributes_hash = md5 of the attributes as a JSON array in
-- column order, timestamps as epoch microseconds so that it does not depend on the time zone.
--
-- Incremental: only the customers whose staged events changed in batches after this model's
-- watermark are recomputed (see staging.stg_customer_events): their rows are deleted and their
-- whole history rebuilt from staging, so the cost follows the customers with new events.

create schema if not exists analytics;

create table if not exists analytics.dim_customer (
    customer_sk varchar not null,
    customer_id varchar not null,
    version bigint not null,
    valid_from timestamptz not null,
    valid_to timestamptz,
    is_current boolean not null,
    is_deleted boolean not null,
    change_action varchar not null,
    source_xid varchar not null,
    user_id varchar,
    name varchar,
    username varchar,
    email varchar,
    phone_prefix varchar,
    phone varchar,
    lang varchar,
    role varchar,
    is_active boolean,
    gender varchar,
    customer_type varchar,
    tax_number varchar,
    crn varchar,
    zip_code varchar,
    city varchar,
    district varchar,
    street varchar,
    created_at timestamptz,
    email_verified_at timestamptz,
    phone_verified_at timestamptz,
    attributes_hash varchar not null
);

create or replace temp table dim_customer__changed_customers as
select *
from customers_changed_between(
    batch_watermark('analytics.dim_customer'),
    batch_watermark('staging.stg_customer_events')
);

delete from meta.model_watermarks where model = 'analytics.dim_customer';

insert into meta.model_watermarks
select
    'analytics.dim_customer' as model,
    batch_watermark('staging.stg_customer_events') as batch_id,
    now() as updated_at;

delete from analytics.dim_customer
where customer_id in (select customer_id from dim_customer__changed_customers);

insert into analytics.dim_customer
-- not materialized: both are read twice, and rescanning beats holding 1M wide rows in memory
with staged_events as not materialized (
    select
        rowid as event_row,
        *,
        case action
            when 'SNAPSHOT' then 0 when 'CREATE' then 1 when 'UPDATE' then 2 when 'DELETE' then 3
        end as action_rank
    from staging.stg_customer_events
    semi join dim_customer__changed_customers using (customer_id)
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
        user_id,
        name,
        username,
        email,
        phone_prefix,
        phone,
        lang,
        role,
        is_active,
        gender,
        customer_type,
        tax_number,
        crn,
        zip_code,
        city,
        district,
        street,
        created_at,
        email_verified_at,
        phone_verified_at
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
        if(list_contains(absent_attributes, 'user_id'), null, {'v': user_id}) as user_id,
        if(list_contains(absent_attributes, 'name'), null, {'v': name}) as name,
        if(list_contains(absent_attributes, 'username'), null, {'v': username}) as username,
        if(list_contains(absent_attributes, 'email'), null, {'v': email}) as email,
        if(
            list_contains(absent_attributes, 'phone_prefix'), null, {'v': phone_prefix}
        ) as phone_prefix,
        if(list_contains(absent_attributes, 'phone'), null, {'v': phone}) as phone,
        if(list_contains(absent_attributes, 'lang'), null, {'v': lang}) as lang,
        if(list_contains(absent_attributes, 'role'), null, {'v': role}) as role,
        if(list_contains(absent_attributes, 'is_active'), null, {'v': is_active}) as is_active,
        if(list_contains(absent_attributes, 'gender'), null, {'v': gender}) as gender,
        if(
            list_contains(absent_attributes, 'customer_type'), null, {'v': customer_type}
        ) as customer_type,
        if(list_contains(absent_attributes, 'tax_number'), null, {'v': tax_number}) as tax_number,
        if(list_contains(absent_attributes, 'crn'), null, {'v': crn}) as crn,
        if(list_contains(absent_attributes, 'zip_code'), null, {'v': zip_code}) as zip_code,
        if(list_contains(absent_attributes, 'city'), null, {'v': city}) as city,
        if(list_contains(absent_attributes, 'district'), null, {'v': district}) as district,
        if(list_contains(absent_attributes, 'street'), null, {'v': street}) as street,
        if(list_contains(absent_attributes, 'created_at'), null, {'v': created_at}) as created_at,
        if(
            list_contains(absent_attributes, 'email_verified_at'), null, {'v': email_verified_at}
        ) as email_verified_at,
        if(
            list_contains(absent_attributes, 'phone_verified_at'), null, {'v': phone_verified_at}
        ) as phone_verified_at
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
        last_value(user_id ignore nulls) over events_so_far as user_id,
        last_value(name ignore nulls) over events_so_far as name,
        last_value(username ignore nulls) over events_so_far as username,
        last_value(email ignore nulls) over events_so_far as email,
        last_value(phone_prefix ignore nulls) over events_so_far as phone_prefix,
        last_value(phone ignore nulls) over events_so_far as phone,
        last_value(lang ignore nulls) over events_so_far as lang,
        last_value(role ignore nulls) over events_so_far as role,
        last_value(is_active ignore nulls) over events_so_far as is_active,
        last_value(gender ignore nulls) over events_so_far as gender,
        last_value(customer_type ignore nulls) over events_so_far as customer_type,
        last_value(tax_number ignore nulls) over events_so_far as tax_number,
        last_value(crn ignore nulls) over events_so_far as crn,
        last_value(zip_code ignore nulls) over events_so_far as zip_code,
        last_value(city ignore nulls) over events_so_far as city,
        last_value(district ignore nulls) over events_so_far as district,
        last_value(street ignore nulls) over events_so_far as street,
        last_value(created_at ignore nulls) over events_so_far as created_at,
        last_value(email_verified_at ignore nulls) over events_so_far as email_verified_at,
        last_value(phone_verified_at ignore nulls) over events_so_far as phone_verified_at
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
        user_id.v as user_id,
        name.v as name,
        username.v as username,
        email.v as email,
        phone_prefix.v as phone_prefix,
        phone.v as phone,
        lang.v as lang,
        role.v as role,
        is_active.v as is_active,
        gender.v as gender,
        customer_type.v as customer_type,
        tax_number.v as tax_number,
        crn.v as crn,
        zip_code.v as zip_code,
        city.v as city,
        district.v as district,
        street.v as street,
        created_at.v as created_at,
        email_verified_at.v as email_verified_at,
        phone_verified_at.v as phone_verified_at
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
                    user_id,
                    name,
                    username,
                    email,
                    phone_prefix,
                    phone,
                    lang,
                    role,
                    is_active,
                    gender,
                    customer_type,
                    tax_number,
                    crn,
                    zip_code,
                    city,
                    district,
                    street,
                    epoch_us(created_at),
                    epoch_us(email_verified_at),
                    epoch_us(phone_verified_at)
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
        event_states.user_id,
        event_states.name,
        event_states.username,
        event_states.email,
        event_states.phone_prefix,
        event_states.phone,
        event_states.lang,
        event_states.role,
        event_states.is_active,
        event_states.gender,
        event_states.customer_type,
        event_states.tax_number,
        event_states.crn,
        event_states.zip_code,
        event_states.city,
        event_states.district,
        event_states.street,
        event_states.created_at,
        event_states.email_verified_at,
        event_states.phone_verified_at,
        versions.attributes_hash
    from versions
    inner join event_states using (event_row)
)

select * from final;

drop table dim_customer__changed_customers;
