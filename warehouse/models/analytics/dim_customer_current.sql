-- analytics.dim_customer_current
-- Grain: one row per customer: its current version, deleted customers included (is_deleted).
-- Same columns as analytics.dim_customer.
--
-- A view over analytics.dim_customer, not a copy: it can never disagree with the dimension and
-- costs no run time or storage (a copied table cost every load its single-threaded commit). A
-- query reads only the columns it names, and is_current first.

{{ config(
    materialized='view',
    description='One row per customer: its current version (deleted ones included).',
) }}

with customer_versions as (
    select * from {{ ref('dim_customer') }}
),

final as (
    select *
    from customer_versions
    where is_current
)

select * from final
