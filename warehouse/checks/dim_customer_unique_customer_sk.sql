-- Offending rows: every customer_sk that is null or held by more than one row of dim_customer.

with customer_versions as (
    select customer_sk, customer_id, valid_from
    from analytics.dim_customer
),

final as (
    select
        customer_sk,
        count(*) as row_count,
        list(customer_id order by customer_id, valid_from) as customer_ids
    from customer_versions
    group by customer_sk
    having customer_sk is null or count(*) > 1
)

select * from final
order by customer_sk;
