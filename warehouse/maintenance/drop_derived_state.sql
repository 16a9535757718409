-- Drops everything the models derive from raw, so that the next run rebuilds it all:
-- staging, intermediate, analytics and the models' bookkeeping in meta. raw is never touched.

drop schema if exists analytics cascade;

drop schema if exists intermediate cascade;

drop schema if exists staging cascade;

drop schema if exists meta cascade;
