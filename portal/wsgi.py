"""The WSGI application (`gunicorn portal.wsgi`).

Once Django is set up and the URLconf imported, the objects loaded so far (modules, models,
views, settings: most of a worker's objects, and all long-lived) are moved out of the garbage
collector's reach with `gc.freeze()`. Otherwise every full collection walks them all, a pause
of tens of milliseconds in the middle of some request: on the customer's account page it
was the difference between p95 and p99 (README, "Customer account page", Benchmark).
"""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()
get_resolver().url_patterns  # noqa: B018 - imports every view module now, not at the first request
gc.freeze()
