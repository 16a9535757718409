-- Offending rows: every customer of dim_customer without exactly one current version, and every
-- customer whose row in dim_customer_current is missing, extra or not its current version.

with customer_versions as (
    select customer_id, customer_sk, is_current
    from analytics.dim_customer
),

current_counts as (
    select
        customer_id,
        count(*) filter (where is_current) as current_rows,
        any_value(customer_sk) filter (where is_current) as current_customer_sk
    from customer_versions
    group by customer_id
),

current_table as (
    select customer_id, count(*) as rows_in_current_table, any_value(customer_sk) as customer_sk
    from analytics.dim_customer_current
    group by customer_id
),

final as (
    select
        coalesce(current_counts.customer_id, current_table.customer_id) as customer_id,
        coalesce(current_counts.current_rows, 0) as current_rows,
        coalesce(current_table.rows_in_current_table, 0) as rows_in_current_table
    from current_counts
    full join current_table using (customer_id)
    where
        coalesce(current_counts.current_rows, 0) <> 1
        or coalesce(current_table.rows_in_current_table, 0) <> 1
        or current_table.customer_sk is distinct from current_counts.current_customer_sk
)

select * from final
order by customer_id;
