"""Dagster resources: where the connector's data lives.

``FlavoursSettings`` resolves the ``FLAVOURS_*`` settings when a run or sensor evaluation asks
for them (never at import), so one code location serves any environment; fields set on the
resource (tests, ``flavours load``) override the environment.
"""

from dagster import ConfigurableResource

from connector.settings import Settings

_FIELDS = ("landing_url", "warehouse", "warehouse_data_url", "dlt_dir")


class FlavoursSettings(ConfigurableResource):
    """Landing store, warehouse (catalog and data) and dlt folder; unset fields come from
    ``FLAVOURS_*``."""

    landing_url: str | None = None
    warehouse: str | None = None
    warehouse_data_url: str | None = None
    dlt_dir: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> "FlavoursSettings":
        """The resource that resolves to ``settings``' landing store, warehouse and dlt folder."""
        return cls(**{field: getattr(settings, field) for field in _FIELDS})

    def get(self) -> Settings:
        """The connector settings, environment first, then this resource's overrides."""
        overrides = {field: getattr(self, field) for field in _FIELDS}
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
