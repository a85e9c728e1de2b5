"""`manage.py devstack`: the web server, a qcluster worker and the Halo simulator together.

For the README's first command. Ctrl-C (or any one process dying) stops all of them.
"""

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

from portal.management.commands.demo import DEMO_PASSWORD, DEMO_USER


class Command(BaseCommand):
    help = "Run the portal, a worker and the Halo simulator until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--halo-port", type=int, default=8765)

    def handle(self, *args, **options):
        manage = [sys.executable, "manage.py"]
        processes = {
            "simulator": [
                *manage,
                "halo_simulator",
                "--seed",
                "demo",
                "--port",
                str(options["halo_port"]),
            ],
            "worker": [*manage, "worker"],
            "web": [*manage, "runserver", "--noreload", options["addr"]],
        }
        running = {}
        # A supervisor's or `kill`'s stop must stop the children too, as Ctrl-C does.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            for name, cmd in processes.items():
                if name == "simulator" and not _has_command("halo_simulator"):
                    continue
                running[name] = subprocess.Popen(cmd, env=os.environ.copy())  # noqa: S603
            time.sleep(1.5)
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nHalo Partner Portal: http://{options['addr']}/admin/\n"
                    f"Login: {DEMO_USER} / {DEMO_PASSWORD}\n"
                    f"Running: {', '.join(running)}. Press Ctrl-C to stop.\n"
                )
            )
            while all(p.poll() is None for p in running.values()):
                time.sleep(0.5)
            dead = [n for n, p in running.items() if p.poll() is not None]
            self.stderr.write(f"{', '.join(dead)} stopped; stopping the rest.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            _stop_all(running.values())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _has_command(name):
    from django.core.management import get_commands

    return name in get_commands()


def _stop_all(processes):
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
