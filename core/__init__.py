"""The shared core of the receiver, the pipelines and the dashboard: settings (``core.settings``),
the landing store (``core.landing``) and JSON logging (``core.logs``)."""
