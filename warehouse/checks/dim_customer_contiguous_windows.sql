-- Offending rows: every dim_customer version whose window does not fit its customer's timeline.
-- Per customer, ordered by valid_from: versions are numbered 1, 2, …; each window is non-empty;
-- valid_to equals the next version's valid_from; only the last version is open and current.

{{ config(
    model='dim_customer',
    description="each customer's versions are contiguous and non-overlapping",
) }}

with customer_versions as (
    select customer_sk, customer_id, version, valid_from, valid_to, is_current
    from {{ ref('dim_customer') }}
),

neighbours as (
    select
        *,
        row_number() over timeline as expected_version,
        lead(valid_from) over timeline as next_valid_from
    from customer_versions
    window timeline as (partition by customer_id order by valid_from, valid_to nulls last)
),

final as (
    select
        customer_sk,
        customer_id,
        version,
        valid_from,
        valid_to,
        is_current,
        next_valid_from,
        case
            when version is distinct from expected_version then 'version out of sequence'
            when valid_to <= valid_from then 'empty or negative window'
            when next_valid_from is null and valid_to is not null then 'last version is closed'
            when valid_to is distinct from next_valid_from then 'gap or overlap with next version'
            when is_current is distinct from (valid_to is null)
                then 'is_current disagrees with valid_to'
        end as problem
    from neighbours
)

select * from final
where problem is not null
order by customer_id, valid_from;
