-- analytics.dim_customer_current
-- Grain: one row per customer: its current version, deleted customers included (is_deleted).
-- Same columns as analytics.dim_customer.
--
-- Incremental: replaces the rows of the customers that analytics.dim_customer recomputed since
-- this model's watermark (see staging.stg_customer_events), so the cost follows the new events.

create table if not exists analytics.dim_customer_current as
select * from analytics.dim_customer
limit 0;

create or replace temp table dim_customer_current__changed_customers as
select *
from meta.customers_changed_between(
    meta.batch_watermark('analytics.dim_customer_current'),
    meta.batch_watermark('analytics.dim_customer')
);

insert or replace into meta.model_watermarks
select
    'analytics.dim_customer_current' as model,
    meta.batch_watermark('analytics.dim_customer') as batch_id,
    now() as updated_at;

delete from analytics.dim_customer_current
where customer_id in (select customer_id from dim_customer_current__changed_customers);

insert into analytics.dim_customer_current
with customer_versions as (
    select *
    from analytics.dim_customer
    semi join dim_customer_current__changed_customers using (customer_id)
),

final as (
    select *
    from customer_versions
    where is_current
)

select * from final;

drop table dim_customer_current__changed_customers;
