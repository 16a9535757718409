"""The ``flavours`` command (``cli.main``), the demo and ``flavours dev`` (``cli.devtools``) and the
sender of synthetic events (``cli.sending``)."""
