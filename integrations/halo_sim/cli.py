"""Command line shared by ``python -m integrations.halo_sim`` and ``manage.py halo_simulator``."""

import argparse
import json
import sys

from .config import Config
from .seed import DEMO_CLIENT_ID
from .server import Simulator, make_server


def add_arguments(parser):
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--tenant", default=None, help="tenant name (default: acme)")
    parser.add_argument(
        "--seed", default="demo", help="demo, empty, or a JSON file shaped like GET /_sim/state"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every API call")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of resource calls answered 500"
    )
    parser.add_argument("--rate-limit", default="300/300", help="N/SECONDS per application, or off")
    parser.add_argument("--variants", default="", help="e.g. envelope=paged,licence_key=bare")
    parser.add_argument(
        "--token-lifetime", type=int, default=3600, help="expires_in of new tokens, seconds"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request line")
    parser.add_argument(
        "--request-log",
        default="",
        help="append every API request here as JSON lines (check: manage.py halo_conformance)",
    )


def build(options):
    """A ``Simulator`` from parsed options; raises ValueError on bad values."""
    config = Config().update(
        {
            "latency_ms": options["latency_ms"],
            "fault_rate": options["fault_rate"],
            "rate_limit": options["rate_limit"],
            "variants": options["variants"],
            "token_lifetime": options["token_lifetime"],
            "verbose": options["verbose"],
            "request_log": options.get("request_log") or "",
        }
    )
    seed = options["seed"]
    if seed not in ("demo", "empty"):
        try:
            with open(seed, encoding="utf-8") as file:
                seed = json.load(file)
        except OSError as exc:
            raise ValueError(f"cannot read seed file: {exc}") from None
    kwargs = {"tenant": options["tenant"]} if options["tenant"] else {}
    return Simulator(seed=seed, config=config, **kwargs)


def serve(options, out=sys.stdout):
    """Run until Ctrl-C, after printing where to find everything."""
    simulator = build(options)
    server = make_server(simulator, options["host"], options["port"])
    base = server.base_url
    app = simulator.applications.get(DEMO_CLIENT_ID) or next(iter(simulator.applications.values()))
    out.write(
        f"Halo simulator for tenant {simulator.tenant!r} at {base}\n"
        f"  resource server  {base}/api\n"
        f"  auth server      {base}/auth  (POST {base}/auth/token?tenant={simulator.tenant})\n"
        f"  application      {app.name}\n"
        f"    tenant         {simulator.tenant}\n"
        f"    client ID      {app.client_id}\n"
        f"    client secret  {app.client_secret}\n"
        f"  control API      {base}/_sim/  (state, reset, config, faults, requests, ...)\n"
        "Press Ctrl-C to stop.\n"
    )
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        out.write("Stopping the Halo simulator.\n")
    finally:
        server.server_close()
        simulator.close()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m integrations.halo_sim", description="Run the Halo simulator."
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        serve(options)
    except ValueError as exc:
        parser.error(str(exc))
