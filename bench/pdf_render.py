"""Render time and peak memory of the invoice PDF renderer.

    .venv/bin/python -m bench.pdf_render [--runs N]

Targets (from the product issue): small invoice < 15 ms median, 2,500-line
invoice < 1 s.  ``measure()`` is reusable by other benches (e.g. bench/pdf.py).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import tracemalloc
from dataclasses import dataclass

from pypdf import PdfReader

from bench.pdf_samples import demo_invoice, large_invoice
from billing.pdf import InvoiceDocument, render_invoice_pdf


@dataclass(frozen=True)
class RenderStats:
    name: str
    lines: int
    pages: int
    size_bytes: int
    median_ms: float
    p95_ms: float
    peak_mib: float


def _pages(pdf: bytes) -> int:
    return len(PdfReader(io.BytesIO(pdf)).pages)


def measure(name: str, doc: InvoiceDocument, runs: int) -> RenderStats:
    """Time ``runs`` renders after one warm-up (font registration), then
    trace one more render for peak memory (tracemalloc slows it, so it is not timed)."""
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
        pages=_pages(pdf),
        size_bytes=len(pdf),
        median_ms=statistics.median(timings),
        p95_ms=timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))],
        peak_mib=peak / 2**20,
    )


TARGETS_MS = {"small": 15.0, "2,500 lines": 1000.0}


def _row(cells: tuple) -> str:
    return f"{cells[0]:<12}" + "".join(f"{cell:>10}" for cell in cells[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=0, help="timed renders each (default: 200 small, 20 large)"
    )
    args = parser.parse_args()
    results = [
        measure("small", demo_invoice(), args.runs or 200),
        measure("2,500 lines", large_invoice(2500), args.runs or 20),
    ]
    print(
        _row(("invoice", "lines", "pages", "KiB", "median ms", "p95 ms", "target ms", "peak MiB"))
    )
    for r in results:
        print(
            _row(
                (
                    r.name,
                    r.lines,
                    r.pages,
                    f"{r.size_bytes / 1024:.0f}",
                    f"{r.median_ms:.1f}",
                    f"{r.p95_ms:.1f}",
                    f"< {TARGETS_MS[r.name]:.0f}",
                    f"{r.peak_mib:.1f}",
                )
            )
        )


if __name__ == "__main__":
    main()
