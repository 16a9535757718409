"""Actions on customer events: e-mails and webhooks sent once per rule and customer version.

``rules`` reads the rules file (``FLAVOURS_ACTIONS_FILE``), ``outbox`` plans and dispatches
``ops.customer_actions``, ``senders`` delivers over SMTP and signed webhooks, and ``assets`` is
the Dagster side: the ``ops/customer_actions`` asset, its ``no_dead_actions`` check, the
``due_actions`` sensor and ``actions_job``.
"""
