-- Offending rows: every customer_sk that is null or held by more than one row of dim_customer.

{{ config(
    model='dim_customer',
    description="customer_sk is unique",
) }}

with customer_versions as (
    select customer_sk, customer_id, valid_from
    from {{ ref('dim_customer') }}
),

-- counted first, so that the list of customers is built only for the offending keys
duplicated_keys as (
    select customer_sk
    from customer_versions
    group by customer_sk
    having customer_sk is null or count(*) > 1
),

final as (
    select
        customer_sk,
        count(*) as row_count,
        list(customer_id order by customer_id, valid_from) as customer_ids
    from customer_versions
    semi join duplicated_keys
        on customer_versions.customer_sk is not distinct from duplicated_keys.customer_sk
    group by customer_sk
)

select * from final
order by customer_sk;
