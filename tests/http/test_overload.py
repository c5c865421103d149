"""(e) Overload: with scheduler.max_queue=4 and scheduler.max_sequences=2, 20 concurrent requests
(half streamed) → the surplus gets 429 with Retry-After and the rate-limit envelope, every
accepted request completes, the 429 count matches the metrics, and the server serves normally
once the burst is over (reliability.md §D)."""

import asyncio
import json

import kiln_server as ks

CLIENTS = 20
MAX_TOKENS = 400  # long enough that the burst finds both slots and the queue full


class OverloadTest(ks.ServerTestCase):
    SETS = {"scheduler.max_queue": 4, "scheduler.max_sequences": 2}

    def test_burst(self):
        def body(i):
            return ks.completion_body(f"Burst {i}", MAX_TOKENS, stream=i % 2 == 0)

        async def burst():
            return await asyncio.gather(*(ks.request(self.port, "POST", "/v1/completions",
                                                     body(i)) for i in range(CLIENTS)))

        results = asyncio.run(burst())
        accepted, rejected, other = [], [], []
        for i, r in enumerate(results):
            (accepted if r.status == 200 else rejected if r.status == 429 else other).append(i)
        print(f"burst of {CLIENTS}: {len(accepted)} accepted, {len(rejected)} rejected (429)")
        self.assertEqual(other, [], "only 200 or 429: " + "; ".join(
            f"{i}: {results[i].status} {results[i].error} {results[i].body[:200]!r}"
            for i in other))
        self.assertGreaterEqual(len(rejected), 1, "no 429 with 20 requests for 2 slots + 4 queued")
        self.assertGreaterEqual(len(accepted), 2, "fewer accepted than max_sequences")
        for i in rejected:
            r = results[i]
            with self.subTest(rejected=i):
                self.assertIn("retry-after", r.headers, "429 without Retry-After")
                self.assertRegex(r.headers["retry-after"], r"^[0-9]+$")
                err = json.loads(r.body)["error"]
                self.assertEqual(err["type"], "rate_limit_error")
                self.assertEqual(err["code"], "rate_limit_exceeded")
        for i in accepted:
            r = results[i]
            with self.subTest(accepted=i):
                if i % 2 == 0:
                    s = ks.stream_summary(r)
                    self.assertTrue(s["ok"], s["problems"])
                    self.assertEqual(s["tokens"], {0: MAX_TOKENS})
                    self.assertEqual(s["usage"]["completion_tokens"], MAX_TOKENS)
                else:
                    self.assertIsNone(r.error)
                    doc = json.loads(r.body)
                    self.assertEqual(doc["usage"]["completion_tokens"], MAX_TOKENS)
                    self.assertEqual(doc["choices"][0]["finish_reason"], "length")

        m = self.server.wait_metrics({"num_requests_running": 0, "num_requests_waiting": 0,
                                      "kda_slots_used": 0, "mla_cache_blocks_used": 0})
        self.assertEqual(self.server.metric("requests_total", 'status="429"', m), len(rejected))
        self.assertEqual(self.server.metric("requests_total", 'status="200"', m), len(accepted))

        # recovered: the rejected requests, retried a few at a time, all succeed
        async def retry():
            return await ks.gather_limited(
                (ks.request(self.port, "POST", "/v1/completions", body(i))
                 for i in rejected), limit=3)

        for i, r in zip(rejected, asyncio.run(retry())):
            self.assertEqual(r.status, 200, f"retry of {i}: {r.status} {r.body[:200]!r}")


if __name__ == "__main__":
    ks.run_main()
