-- Macros the models after staging share, created in the session before each of them runs
-- (DuckLake keeps no functions in its catalog).
--
-- Each model keeps the last staging batch it has consumed in meta.model_watermarks; a model
-- downstream recomputes exactly the customers of the batches its upstream has consumed since its
-- own watermark.

create or replace temp macro batch_watermark(model_name) as (
    select coalesce(max(batch_id), 0) from meta.model_watermarks where model = model_name
);

create or replace temp macro customers_changed_between(after_batch, upto_batch) as table
select distinct customer_id
from meta.stg_customer_events_changes
where batch_id > after_batch and batch_id <= upto_batch;
