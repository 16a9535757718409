-- Parse landed envelope lines into typed columns, and say why a line is rejected.
-- Grain: one row per landed line. Input: the relation `landed_lines`
-- (topic, landing_file, line_no, line), registered from Arrow by pipelines/landing_source.py.
-- customers_snapshot/ holds the backfill's snapshots (pipelines/backfill.py): customer events of
-- action customers.SNAPSHOT, loaded into the same table as the webhooks' events.
-- Objects under _rejected/<topic>/ hold bodies the receiver refused (with its reason): every
-- line of them is a rejected line, so nothing an authenticated sender sent goes unseen.
-- Every line is parsed once: json_extract with a list of paths (NULL when not JSON at all).
with

fields as (
    select
        topic,
        landing_file,
        line_no,
        line,
        try(json_extract(
            line,
            [
                '$.received_at',
                '$.request_id',
                '$.payload',
                '$.payload.xid',
                '$.payload.action',
                '$.payload.timestamp',
                '$.payload.data.id',
                '$.payload.code',
                '$.payload.endpoint',
                '$.payload.message',
                '$.reason',
                '$.status'
            ]
        )) as f
    from landed_lines
),

typed as (
    select
        topic,
        landing_file,
        line_no,
        line,
        f is not null as is_json,
        try_cast(f[1] ->> '$' as timestamptz) as received_at,
        f[2] ->> '$' as request_id,
        f[3] as payload,
        -- json_extract writes values compactly, so an object is exactly a value starting with
        -- '{'; json_type would parse every payload a second time (a third of this query's CPU)
        coalesce(starts_with(f[3], '{'), false) as payload_is_object,
        f[4] ->> '$' as xid,
        json_type(f[4]) as xid_type,
        f[5] ->> '$' as action,
        json_type(f[5]) as action_type,
        json_type(f[6]) as timestamp_type,
        try_cast(f[6] ->> '$' as bigint) as event_ms,
        f[7] ->> '$' as customer_id,
        json_type(f[7]) as customer_id_type,
        f[8] as code,
        f[9] ->> '$' as endpoint,
        f[10] ->> '$' as message,
        f[11] ->> '$' as receiver_reason,
        f[12] ->> '$' as receiver_status
    from fields
),

checked as (
    select
        *,
        case
            -- lines the reader marked (INVALID_UTF8_MARK, connector.landing.CORRUPT_GZIP_MARK)
            when starts_with(line, '<invalid UTF-8> ')
                then 'line is not valid UTF-8 (kept with replacement characters)'
            when starts_with(line, '<corrupt gzip> ')
                then 'object is damaged gzip from here on; the lines before this one were loaded'
            when starts_with(topic, '_rejected/')
                then 'rejected by the receiver (HTTP ' || coalesce(receiver_status, '?') || '): '
                    || coalesce(receiver_reason, 'no reason recorded')
            when not is_json then 'line is not valid JSON (torn or corrupt line)'
            when not payload_is_object then 'envelope has no payload object'
            when topic in ('customers', 'customers_snapshot') then nullif(concat_ws('; ',
                case
                    when xid_type is null then 'missing xid'
                    when xid_type <> 'VARCHAR' or xid = '' then 'xid is not a non-empty string'
                end,
                case
                    when action_type is null then 'missing action'
                    when topic = 'customers_snapshot' and (
                        action_type <> 'VARCHAR' or lower(action) <> 'customers.snapshot'
                    ) then 'unknown action (expected customers.snapshot from the backfill)'
                    when topic = 'customers' and (
                        action_type <> 'VARCHAR'
                        or not regexp_full_match(lower(action), 'customers\.(create|update|delete)')
                    ) then 'unknown action (expected customers.create, update or delete)'
                end,
                case
                    when timestamp_type is null then 'missing timestamp'
                    when timestamp_type not in ('BIGINT', 'UBIGINT')
                        then 'timestamp is not an integer of epoch milliseconds'
                    when event_ms is null or event_ms not between 0 and 253402300799999
                        then 'timestamp is out of range'
                end,
                case
                    when customer_id_type is null then 'missing data.id'
                    when customer_id_type <> 'VARCHAR' or customer_id = ''
                        then 'data.id is not a non-empty string'
                end
            ), '')
        end as reject_reason
    from typed
),

final as (
    select
        regexp_replace(topic, '^_rejected/', '') as topic,
        landing_file,
        line_no,
        reject_reason,
        case when reject_reason is not null then rtrim(line, chr(10)) end as line,
        received_at,
        request_id,
        case when reject_reason is null then payload end as payload,
        xid,
        action,
        case
            when reject_reason is null and topic in ('customers', 'customers_snapshot')
                then epoch_ms(event_ms)::timestamptz
        end as event_ts,
        customer_id,
        try_cast(code as bigint) as code,
        endpoint,
        message
    from checked
)

select * from final
