"""How fast the Halo simulator makes bulk data: `POST /_sim/generate` of 10,000 invoices
(with 100 clients, 10 items and 5 licences per client), as tests and benches ask for it.

    .venv/bin/python bench/halo_simulator.py [--invoices 10000] [--runs 5]

The simulator runs in this process on a free port (as `run_simulator()` serves tests); each
run starts from the demo seed. Target: under 3 s for 10,000 invoices.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integrations.halo_sim.testing import run_simulator  # noqa: E402

TARGET_SECONDS = 3.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    counts = {"clients": 100, "items": 10, "invoices": options.invoices, "licences_per_client": 5}
    samples = []
    with run_simulator() as sim:
        for _ in range(options.runs):
            sim.control.reset()
            started = time.perf_counter()
            made = sim.control.generate(**counts)
            samples.append(time.perf_counter() - started)
            assert made["invoices"] == options.invoices, made
    best, median = min(samples), statistics.median(samples)
    print(f"generate {options.invoices:,} invoices ({options.runs} runs, each from the demo seed)")
    print(f"  best {best:.2f} s, median {median:.2f} s, worst {max(samples):.2f} s")
    print(f"  {options.invoices / median:,.0f} invoices per second (median)")
    verdict = "met" if median < TARGET_SECONDS else "MISSED"
    print(f"  target: under {TARGET_SECONDS:g} s: {verdict}")


if __name__ == "__main__":
    main()
