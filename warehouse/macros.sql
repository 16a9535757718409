{#-
Jinja macros the models share, rendered by warehouse.runner before DuckDB sees the SQL (as
`macros.<name>` in every model).

Each model keeps the last staging batch it has consumed in meta.model_watermarks; a model
downstream recomputes exactly the customers of the batches its upstream has consumed since its
own watermark.
-#}

{% macro batch_watermark(model) -%}
(select coalesce(max(batch_id), 0) from meta.model_watermarks where model = '{{ model }}')
{%- endmacro %}

{#- Temp table `into`: the customers whose staged events changed in the batches `upstream` has
consumed since `model`'s watermark; then `model`'s watermark moves up to `upstream`'s. -#}
{% macro consume_changed_customers(model, upstream, into) -%}
create or replace temp table {{ into }} as
select distinct customer_id
from meta.stg_customer_events_changes
where
    batch_id > {{ batch_watermark(model) }}
    and batch_id <= {{ batch_watermark(upstream) }};

delete from meta.model_watermarks where model = '{{ model }}';

insert into meta.model_watermarks
select
    '{{ model }}' as model,
    {{ batch_watermark(upstream) }} as batch_id,
    now() as updated_at
{%- endmacro %}
