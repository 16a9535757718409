-- Offending rows: every customer of dim_customer without exactly one current version.
-- (dim_customer_current is a view of these current versions, so it follows.)

{{ config(
    model='dim_customer',
    description="exactly one current row per customer (the rows of dim_customer_current)",
) }}

with customer_versions as (
    select customer_id, is_current
    from {{ ref('dim_customer') }}
),

final as (
    select
        customer_id,
        count(*) filter (where is_current) as current_rows
    from customer_versions
    group by customer_id
    having current_rows <> 1
)

select * from final
order by customer_id;
