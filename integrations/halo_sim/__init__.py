"""A HaloPSA simulator following ``/work/shared/halo-api.md`` sections 1 to 5.

Pure standard library (plus ``requests`` for webhook deliveries), no Django.
Run it with ``python -m integrations.halo_sim`` or ``manage.py halo_simulator``;
in tests use ``integrations.halo_sim.testing.run_simulator``.

Modules: ``server`` (HTTP, auth, faults, control API), ``state`` (resources
and business rules), ``seed`` (demo data, bulk generation), ``auth``,
``faults``, ``webhooks``, ``config``, ``cli``, ``testing``.
"""

from .seed import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT
from .server import Simulator, make_server

__all__ = ["DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "DEMO_TENANT", "Simulator", "make_server"]
