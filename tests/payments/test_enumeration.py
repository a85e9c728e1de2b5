"""Walking pay links by sequential Halo id (pentest #12, finding 6): the lookup limit is one
count for every process, enumeration patterns alert the tenant's owners, and a tenant may
ask for the invoice's amount or billing email before a pay page reached by number alone."""

import subprocess
import sys

import pytest

from tests.test_counters import child_environment

CHILD = """
import sys
import django
django.setup()
from django.test import RequestFactory
from billing.payments.views import PayLinkThrottle

class Throttle(PayLinkThrottle):
    timer = staticmethod(lambda: 6000.0)  # one fixed minute: no window ends mid-test

request = RequestFactory().get("/pay/acme/1001", REMOTE_ADDR="203.0.113.9")
print(sum(Throttle().allow_request(request, None) for _ in range(int(sys.argv[1]))))
"""


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_share_one_lookup_count(tmp_path):
    """The pentest: 300 lookups on 2 workers got 118 answers at 60/min. Two processes
    trying 150 each now get 60 between them."""
    env = child_environment(tmp_path) | {"PAYMENTS_LINK_RATE": "60/min", "PAYMENTS_PROXIES": "0"}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, "150"], env=env, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    answered = [int(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert sum(answered) == 60

