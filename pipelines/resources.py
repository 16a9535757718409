"""Dagster resources: where the connector's data lives.

``FlavoursSettings`` resolves the ``FLAVOURS_*`` settings when a run or sensor evaluation asks
for them (never at import), so one code location serves any environment; fields set on the
resource (tests, ``flavours load``) override the environment.
"""

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, SecretStr

from core.settings import Settings

_FIELDS = ("landing_url", "warehouse", "warehouse_data_url", "dlt_dir")


class FlavoursSettings(ConfigurableResource):
    """Landing store, warehouse (catalog and data) and dlt folder; unset fields come from
    ``FLAVOURS_*``."""

    landing_url: str | None = None
    warehouse: str | None = None
    warehouse_data_url: str | None = None
    dlt_dir: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Any other settings, by field name (``flavours load`` and tests pass what they set)."""

    @classmethod
    def of(cls, settings: Settings) -> "FlavoursSettings":
        """The resource that resolves to ``settings``: its landing store, warehouse and dlt
        folder, and every other setting it was given explicitly."""
        given = {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name in settings.model_fields_set - set(_FIELDS)
            if (value := getattr(settings, name)) is not None
        }
        return cls(**{field: getattr(settings, field) for field in _FIELDS}, overrides=given)

    def get(self) -> Settings:
        """The connector settings, environment first, then this resource's overrides."""
        overrides = {field: getattr(self, field) for field in _FIELDS}
        return Settings(**self.overrides, **{k: v for k, v in overrides.items() if v is not None})
