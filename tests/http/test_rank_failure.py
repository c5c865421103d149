"""A rank that dies (kill -9) or hangs (SIGSTOP, caught by scheduler.step_timeout_s) while
streams are in flight: every stream ends with an error event and `data: [DONE]`, rank 0 logs the
failure within 10 s (the dead rank) or the step timeout + 2 s (the hung one), and mpirun exits
non-zero within 30 s (reliability.md §C)."""

import asyncio
import datetime
import json
import os
import re
import signal
import time
import unittest

import kiln_server as ks

STEP_TIMEOUT_S = 2
LONG = 4000


class RankFailureTest(unittest.TestCase):
    def test_killed_rank(self):
        self._fail_rank(signal.SIGKILL, {}, limit_s=10)

    def test_hung_rank(self):
        self._fail_rank(signal.SIGSTOP, {"scheduler.step_timeout_s": STEP_TIMEOUT_S},
                        limit_s=STEP_TIMEOUT_S + 2)

    def _fail_rank(self, sig, sets, limit_s):
        server = ks.KilnServer(sets, tag=f"RankFailure{int(sig)}")
        server.start()
        try:
            self._run(server, sig, limit_s)
        finally:
            try:
                os.kill(server.rank_pid(1), signal.SIGCONT)
            except (OSError, AssertionError):
                pass
            server.kill()

    def _run(self, server, sig, limit_s):
        port = server.port
        t_sig = [0.0, None]

        async def run():
            started = ks.StreamsStarted(3)
            streams = [asyncio.create_task(ks.request(
                port, "POST", "/v1/chat/completions" if i == 1 else "/v1/completions",
                ks.completion_body(f"Story {i}", LONG, chat=i == 1),
                on_event=started.on_event(i), timeout=60)) for i in range(3)]
            await asyncio.wait_for(started.event.wait(), 30)
            t_sig[0] = time.monotonic()
            t_sig[1] = datetime.datetime.now()
            os.kill(server.rank_pid(1), sig)
            return await asyncio.gather(*streams)

        results = asyncio.run(run())
        for i, r in enumerate(results):
            with self.subTest(stream=i):
                self.assertEqual(r.status, 200)
                self.assertTrue(r.done, f"no [DONE]: {r.error} {r.body[-300:]!r}")
                self.assertEqual(r.framing_errors, [])
                last = json.loads(r.events[-2])
                self.assertIn("error", last, f"the stream finished instead: {r.body[-300:]!r}")
                self.assertEqual(sorted(last["error"]), ["code", "message", "param", "type"])
                self.assertEqual(last["error"]["code"], "unavailable")
                # arrival also waits on this client parsing the chunks before it
                self.assertLess(r.times[-1] - t_sig[0], limit_s + 30)

        rc = server.wait_exit(30)
        if rc is None:
            server.kill()
            self.fail(f"mpirun still running 30 s after the failure:\n{server.log_tail()}")
        self.assertNotEqual(rc, 0, "a failed job must not exit 0")
        # Server side: when rank 0 gave up on the other rank.
        when = None
        for line in server.log().splitlines():
            m = re.match(r"\[(\d+-\d+-\d+ \d+:\d+:[\d.]+)\] \[\S*error\S*\] (.*ending every request)",
                         line)
            if m:
                when = datetime.datetime.fromisoformat(m.group(1))
                break
        self.assertIsNotNone(when, server.log_tail())
        self.assertLess((when - t_sig[1]).total_seconds(), limit_s, server.log_tail())
        print(f"rank 1 {signal.Signals(sig).name}: rank 0 failed the requests "
              f"{(when - t_sig[1]).total_seconds():.2f} s later; mpirun exit {rc}")


if __name__ == "__main__":
    ks.run_main()
