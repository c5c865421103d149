"""(d) Cancellation: 20 streaming clients that disconnect after their first token, next to one
normal request that must complete untouched; afterwards every KDA slot and MLA cache block is
free and nothing runs (reliability.md §B: a disconnect aborts the sequence within one step).
Then clients that close right after sending (still queued) leave nothing behind either."""

import asyncio
import json

import kiln_server as ks

LEAVERS = 20
LONG = 2000       # tokens the leavers ask for: far more than they could get before aborting
NORMAL = 32


class CancelTest(ks.ServerTestCase):
    def test_disconnect_after_first_token(self):
        async def run():
            leavers = [ks.request(self.port, "POST", "/v1/completions",
                                  ks.completion_body(f"Leaver {i} says", LONG),
                                  disconnect_after=1)
                       for i in range(LEAVERS)]
            normal = ks.request(self.port, "POST", "/v1/chat/completions",
                                ks.completion_body("I stay until the end", NORMAL, chat=True))
            return await asyncio.gather(normal, *leavers)

        normal, *leavers = asyncio.run(run())
        s = ks.stream_summary(normal)
        self.assertTrue(s["ok"], f"the normal request: {s['problems']}")
        self.assertEqual(s["tokens"], {0: NORMAL})
        self.assertEqual(s["usage"]["completion_tokens"], NORMAL)
        for i, r in enumerate(leavers):
            self.assertEqual(r.status, 200, f"leaver {i}: {r.body[:200]!r} {r.error}")
            self.assertTrue(r.disconnected, f"leaver {i} got no token: {r.error}")

        self.server.wait_metrics({"kda_slots_used": 0, "mla_cache_blocks_used": 0,
                                  "num_requests_running": 0, "num_requests_waiting": 0},
                                 timeout=10)
        m = self.server.metrics()
        self.assertGreater(self.server.metric("kda_slots_total", m=m), 0)
        self.assertGreater(self.server.metric("mla_cache_blocks_total", m=m), 0)
        aborted = self.server.metric_sum("requests_aborted_total", m)
        self.assertEqual(aborted, LEAVERS, "requests_aborted_total (all reasons)")
        self.assertEqual(self.server.metric("requests_total", 'status="499"', m), LEAVERS)
        self.assertEqual(self.server.metric("requests_total", 'status="200"', m), 1)
        generated = self.server.metric("generation_tokens_total", m=m)
        print(f"{LEAVERS} leavers of {LONG} tokens + {NORMAL}: {generated:g} tokens generated; "
              f"aborted by reason: " + ", ".join(
                  f"{labels} {v:g}" for (n, labels), v in m.items()
                  if n == "kiln:requests_aborted_total"))
        self.assertLess(generated, NORMAL + LEAVERS * LONG / 4,
                        "the leavers' sequences kept running after they left")

        # clients that leave before their first token (while prefilling or queued)
        async def hit_and_run():
            async def one(i):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                data = json.dumps(ks.completion_body("Gone " * 50 + str(i), LONG)).encode()
                writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             f"application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                             + data)
                await writer.drain()
                await asyncio.sleep(0.05 * (i % 4))
                writer.close()
            await asyncio.gather(*(one(i) for i in range(24)))
            # and a normal request after them
            return await ks.request(self.port, "POST", "/v1/completions",
                                    ks.completion_body("after", 8))

        after = ks.stream_summary(asyncio.run(hit_and_run()))
        self.assertTrue(after["ok"], after["problems"])
        self.server.wait_metrics({"kda_slots_used": 0, "mla_cache_blocks_used": 0,
                                  "num_requests_running": 0, "num_requests_waiting": 0},
                                 timeout=10)
        generated2 = self.server.metric("generation_tokens_total")
        self.assertLess(generated2 - generated, 8 + 24 * LONG / 4,
                        "sequences of clients that left early kept running")


if __name__ == "__main__":
    ks.run_main()
