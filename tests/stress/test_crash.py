"""Crash safety, short form: 20 kill -9s of a localserve under Send, SMTP submission,
delivery and webhook load (:mod:`tests.stress.crash`; the module's docstring has the
long form)."""

from __future__ import annotations

import asyncio
import os

from twisted.trial.unittest import SynchronousTestCase

from tests.stress import crash


class CrashTests(SynchronousTestCase):
    def test_kill_9_twenty_times_under_load(self) -> None:
        kills = int(os.environ.get("MOXTW_STRESS_KILLS", "20"))
        counts = asyncio.run(crash.run(kills=kills, min_interval=0.5, max_interval=2.0, drain_timeout=300))
        print("\ncrash safety: " + counts.summary())
        for line in counts.integrity_notes:
            print("  note: " + line)
        self.assertGreater(counts.accepted_send, 0)
        self.assertGreater(counts.accepted_smtp, 0)
        self.assertGreater(counts.failed, 0)
        self.assertEqual(counts.lost, 0, counts.lost_examples)
        self.assertEqual(counts.wrong, 0, counts.wrong_examples)
        self.assertEqual(counts.delivered + counts.failed, counts.accepted)
        self.assertEqual((counts.unexplained_deliveries, counts.unexplained_webhooks, counts.events_made_twice),
                         (0, 0, 0))
        self.assertEqual(counts.integrity_problems, [])
