"""Render time and peak memory of the invoice PDF renderer.

    .venv/bin/python -m bench.pdf_render [--runs N]

Targets (from the product issue): small invoice < 15 ms median, 2,500-line
invoice < 1 s.  The "no pay link" row shows what the QR code costs: reportlab
encodes it in pure Python, trying all eight mask patterns.  "best" is the
fastest run, a steadier figure than the median on a busy machine.
``measure()`` is reusable by other benches (e.g. bench/pdf.py).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import tracemalloc
from dataclasses import dataclass, replace

from pypdf import PdfReader

from bench.pdf_samples import demo_invoice, large_invoice
from billing.pdf import InvoiceDocument, render_invoice_pdf


@dataclass(frozen=True)
class RenderStats:
    name: str
    lines: int
    pages: int
    size_bytes: int
    best_ms: float
    median_ms: float
    p95_ms: float
    peak_mib: float


def measure(name: str, doc: InvoiceDocument, runs: int) -> RenderStats:
    """Time ``runs`` renders after one warm-up (font registration, logo decoding),
    then trace one more for peak memory (tracemalloc slows it, so it is not timed)."""
    pdf = render_invoice_pdf(doc)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        render_invoice_pdf(doc)
        timings.append((time.perf_counter() - start) * 1000)
    tracemalloc.start()
    render_invoice_pdf(doc)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    timings.sort()
    return RenderStats(
        name=name,
        lines=len(doc.lines),
        pages=len(PdfReader(io.BytesIO(pdf)).pages),
        size_bytes=len(pdf),
        best_ms=timings[0],
        median_ms=statistics.median(timings),
        p95_ms=timings[round(0.95 * (len(timings) - 1))],
        peak_mib=peak / 2**20,
    )


TARGETS_MS = {"small": 15, "small, no pay link": 15, "2,500 lines": 1000}
HEADER = (
    "invoice",
    "lines",
    "pages",
    "KiB",
    "best ms",
    "median ms",
    "p95 ms",
    "target",
    "peak MiB",
)


def _row(cells: tuple) -> str:
    return f"{cells[0]:<20}" + "".join(f"{cell:>10}" for cell in cells[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=0, help="timed renders each (default: 200 small, 20 large)"
    )
    args = parser.parse_args()
    small = demo_invoice()
    results = [
        measure("small", small, args.runs or 200),
        measure(
            "small, no pay link",
            replace(small, payment=replace(small.payment, pay_link=None)),
            args.runs or 200,
        ),
        measure("2,500 lines", large_invoice(2500), args.runs or 20),
    ]
    print(_row(HEADER))
    for r in results:
        print(
            _row(
                (
                    r.name,
                    r.lines,
                    r.pages,
                    f"{r.size_bytes / 1024:.0f}",
                    f"{r.best_ms:.1f}",
                    f"{r.median_ms:.1f}",
                    f"{r.p95_ms:.1f}",
                    f"< {TARGETS_MS[r.name]}",
                    f"{r.peak_mib:.1f}",
                )
            )
        )


if __name__ == "__main__":
    main()
