"""The benchmark suite keeps working: ``bench/run_all.py --quick`` runs every benchmark
against real daemons on loopback and reports every figure.

Only that the benchmarks run and measure something is asserted here; their speed is
for the people reading the table, never a test's pass/fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class RunAllQuickTests(SynchronousTestCase):
    def test_every_benchmark_reports_its_figures(self) -> None:
        out = Path(self.mktemp()).resolve()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--json", str(out)],
            capture_output=True, text=True, timeout=900, cwd=str(ROOT),
        )  # fmt: skip
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        table = json.loads(out.read_text())
        self.assertTrue(table["quick"])
        self.assertEqual(table["failures"], [])
        figures = {f["figure"]: (f["value"], f["unit"]) for f in table["figures"]}
        for figure in (
            "webapi Send, 16 clients",
            "webapi Send, 1 client",
            "SMTP submission, 8 connections",
            "SMTP submission, 1 connection",
            "webapi Send, 1 client, held (no delivery)",
            "SMTP submission, 8 connections, held (no delivery)",
            "queue delivery to smtp-sink (preloaded, 1 domain)",
            "webhooks to one URL answering in 100 ms",
            "webapi Send, 16 clients, 10,000 held",
            "daemon RSS after Sends, 10,000 held",
        ):
            self.assertIn(figure, figures)
            self.assertGreater(figures[figure][0], 0, figure)
        # The printed table has the same figures.
        for figure in figures:
            self.assertIn(figure, proc.stdout)
