"""WSGI entry point for another WSGI server (settings from the environment).

``flavours serve`` is the supported way to run the receiver. Under another server with several
processes, ``/metrics`` shows only the process that answers unless ``PROMETHEUS_MULTIPROC_DIR``
names an empty folder before it starts (prometheus_client's multiprocess mode), and a batch
always waits out its quiet gap (it cannot know the server's thread count).
"""

from connector import create_app
from core.logs import configure_logging
from core.settings import Settings

settings = Settings()
configure_logging(settings.log_level)
app = create_app(settings)
