"""(f) Graceful shutdown: streams in flight when rank 0 gets SIGTERM (scheduler.drain_timeout_s=2)
each end with `data: [DONE]` — finished normally, or an error event then [DONE] — within the
deadline; during the drain /health is 503 and new work is not accepted;
mpirun exits 0 (reliability.md §B)."""

import asyncio
import datetime
import json
import re
import time
import unittest

import kiln_server as ks

DRAIN_S = 2
LONG = 3000
SHORT = 24


class ShutdownTest(unittest.TestCase):
    def test_sigterm_drains(self):
        server = ks.KilnServer({"scheduler.drain_timeout_s": DRAIN_S}, tag="ShutdownTest")
        server.start()
        try:
            self._drain(server)
        finally:
            server.kill()

    def _drain(self, server):
        port = server.port
        health: list[str] = []
        new_work: list[str] = []
        t_term = [0.0]

        async def run():
            started = asyncio.Event()
            got_first = set()

            def on_event(i):
                def f(res):
                    if res.content_chunks():
                        got_first.add(i)
                        if len(got_first) == 4:
                            started.set()
                return f

            longs = [asyncio.create_task(ks.request(
                port, "POST", "/v1/chat/completions" if i % 2 else "/v1/completions",
                ks.completion_body(f"Long story {i}", LONG, chat=bool(i % 2)),
                on_event=on_event(i), timeout=60)) for i in range(4)]
            await asyncio.wait_for(started.wait(), 30)
            # two short streams, admitted (first token seen) before the signal: they have
            # ample time to finish inside the drain deadline
            short_started = asyncio.Event()
            short_first = set()

            def on_short(i):
                def f(res):
                    if res.content_chunks() or res.done:
                        short_first.add(i)
                        if len(short_first) == 2:
                            short_started.set()
                return f

            shorts = [asyncio.create_task(ks.request(
                port, "POST", "/v1/completions", ks.completion_body(f"Short {i}", SHORT),
                on_event=on_short(i), timeout=60)) for i in range(2)]
            await asyncio.wait_for(short_started.wait(), 30)
            server.sigterm_rank0()
            t_term[0] = time.monotonic()
            await asyncio.sleep(0.3)  # let the signal land before asserting on /health

            async def poll():
                while not all(t.done() for t in longs + shorts):
                    r = await ks.request(port, "GET", "/health", timeout=5)
                    health.append(str(r.status) if r.status else "refused")
                    if len(new_work) < 3:
                        r = await ks.request(port, "POST", "/v1/completions",
                                             ks.completion_body("late", 4, stream=False),
                                             timeout=5)
                        new_work.append(str(r.status) if r.status else "refused")
                    await asyncio.sleep(0.1)

            await poll()
            return await asyncio.gather(*longs), await asyncio.gather(*shorts)

        longs, shorts = asyncio.run(run())
        t_end = time.monotonic()

        for name, results, want in (("long", longs, None), ("short", shorts, SHORT)):
            for i, r in enumerate(results):
                with self.subTest(stream=f"{name} {i}"):
                    self.assertEqual(r.status, 200, f"{r.status} {r.error} {r.body[:200]!r}")
                    self.assertIsNone(r.error, "the connection broke instead of a clean end")
                    self.assertEqual(r.framing_errors, [])
                    self.assertTrue(r.done, "stream ended without data: [DONE]: "
                                            f"{r.body[-300:]!r}")
                    self.assertGreaterEqual(len(r.events), 2, r.body[-300:])
                    last = json.loads(r.events[-2])
                    s = ks.stream_summary(r)
                    if "error" in last:
                        self.assertEqual(sorted(last["error"]),
                                         ["code", "message", "param", "type"])
                        # cut at the deadline, not before it
                        self.assertGreater(r.times[-2] - t_term[0], DRAIN_S - 0.5,
                                           "error event before the drain deadline")
                    else:
                        self.assertTrue(s["ok"], s["problems"])
                        self.assertEqual(s["finish"], {0: "length"})
                        if want is not None:
                            self.assertEqual(s["tokens"], {0: want})
                        self.assertEqual(s["usage"]["completion_tokens"], s["tokens"][0])
                    # The stream ended (no hang). When it arrived depends on how fast this
                    # client parses the thousands of chunks before it on a busy machine; the
                    # server's own timing is checked from its log below.
                    self.assertLess(r.times[-1] - t_term[0], DRAIN_S + 30)
        # The port keeps answering during the drain; it may refuse only once the last stream has
        # ended and the process is on its way out.
        self.assertTrue(health and health[0] == "503", f"/health during the drain: {health}")
        self.assertTrue(all(h in ("503", "refused") for h in health),
                        f"/health during the drain: {health}")
        self.assertTrue(all(h in ("503", "refused") for h in new_work),
                        f"new requests during the drain: {new_work}")

        # Server side: the drain deadline ended what was left DRAIN_S after the signal.
        stamps = {}
        for line in server.log().splitlines():
            m = re.match(r"\[(\d+-\d+-\d+ \d+:\d+:[\d.]+)\]", line)
            for key in ("signal 15", "drain deadline passed", "stopped"):
                if m and key in line and key not in stamps:
                    stamps[key] = datetime.datetime.fromisoformat(m.group(1))
        self.assertIn("signal 15", stamps, server.log_tail())
        if any("error" in json.loads(r.events[-2]) for r in longs if len(r.events) >= 2):
            self.assertIn("drain deadline passed", stamps, server.log_tail())
            late = (stamps["drain deadline passed"] - stamps["signal 15"]).total_seconds()
            self.assertLess(late, DRAIN_S + 1.0, server.log_tail())
            self.assertGreaterEqual(late, DRAIN_S - 0.05, server.log_tail())

        rc = server.wait_exit(30)
        if rc is None:
            server.kill()
            self.fail(f"mpirun still running 30 s after SIGTERM:\n{server.log_tail()}")
        self.assertEqual(rc, 0, f"mpirun exit code:\n{server.log_tail()}")
        print(f"drain: streams done {t_end - t_term[0]:.2f} s after SIGTERM; /health {health[:5]}"
              f"...; long streams ended with "
              f"{['error' if 'error' in json.loads(r.events[-2]) else 'finish' for r in longs]}")


if __name__ == "__main__":
    ks.run_main()
