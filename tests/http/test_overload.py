"""(e) Overload: with scheduler.max_sequences=2 and scheduler.max_queue=4, the server holds
exactly max_sequences running + max_queue waiting requests; every request beyond gets 429 with
Retry-After and the documented rate-limit body, every accepted request completes, the 429 count
matches the metrics, and the server serves normally once the burst is over (reliability.md §D).

The count is made exact, not left to timing: first max_sequences long streams fill every slot
(each has its first token, so it runs), then a burst of CLIENTS - max_sequences requests (half
streamed) meets a full batch and an empty queue. Nothing can leave the batch or the queue while
the burst lands (checked: every 429 and every streamed answer's status line came before the first slot
holder finished), so exactly max_queue of the burst are accepted and the rest are refused. Both numbers
are read from the server: max_sequences is its kda_slots_total, max_queue the setting it was
started with."""

import asyncio
import json

import kiln_server as ks

CLIENTS = 20
MAX_TOKENS = 400  # long enough that the slot holders outlast the burst by far (~2 s here)


class OverloadTest(ks.ServerTestCase):
    SETS = {"scheduler.max_queue": 4, "scheduler.max_sequences": 2}

    def test_burst(self):
        slots = int(self.server.metric("kda_slots_total"))
        queue = self.SETS["scheduler.max_queue"]
        self.assertEqual(slots, self.SETS["scheduler.max_sequences"], "kda_slots_total")

        def body(i):
            return ks.completion_body(f"Burst {i}", MAX_TOKENS, stream=i % 2 == 0)

        async def run():
            running = ks.StreamsStarted(slots, any_event=True)
            holders = [asyncio.create_task(ks.request(
                self.port, "POST", "/v1/completions",
                ks.completion_body(f"Holder {i}", MAX_TOKENS), on_event=running.on_event(i)))
                for i in range(slots)]
            waiter = asyncio.ensure_future(running.event.wait())
            await asyncio.wait([waiter, *holders], timeout=30,
                               return_when=asyncio.FIRST_COMPLETED)
            if not running.event.is_set():
                waiter.cancel()
                self.fail("slot holders did not start: " + "; ".join(
                    f"{t.result().status} {t.result().body[:200]!r}" for t in holders if t.done()))
            burst = await asyncio.gather(*(ks.request(self.port, "POST", "/v1/completions",
                                                      body(i)) for i in range(slots, CLIENTS)))
            return await asyncio.gather(*holders), burst

        holders, burst = asyncio.run(run())
        results = dict(enumerate(holders)) | {slots + i: r for i, r in enumerate(burst)}
        accepted, rejected, other = [], [], []
        for i, r in results.items():
            (accepted if r.status == 200 else rejected if r.status == 429 else other).append(i)
        print(f"{slots} slot holders + a burst of {CLIENTS - slots}: {len(accepted)} accepted, "
              f"{len(rejected)} rejected (429)")
        self.assertEqual(other, [], "only 200 or 429: " + "; ".join(
            f"{i}: {results[i].status} {results[i].error} {results[i].body[:200]!r}"
            for i in other))
        # (a non-streamed 200 comes only at its end: its admission is not timed)
        first_done = min(r.t_end for r in holders)
        late = [i for i, r in results.items() if i >= slots and (i in rejected or i % 2 == 0)
                and not 0 < r.t_head < first_done]
        self.assertEqual(late, [], "burst answers after a slot holder finished: the count below "
                                   "would not be exact")
        self.assertEqual(len(accepted), slots + queue,
                         f"accepted = max_sequences ({slots}) + max_queue ({queue})")
        self.assertEqual(len(rejected), CLIENTS - slots - queue)
        for i in rejected:
            r = results[i]
            with self.subTest(rejected=i):
                self.assertIn("retry-after", r.headers, "429 without Retry-After")
                self.assertRegex(r.headers["retry-after"], r"^[1-9][0-9]*$")
                doc = json.loads(r.body)
                self.assertEqual(list(doc), ["error"])
                err = doc["error"]
                self.assertEqual(sorted(err), ["code", "message", "param", "type"])
                self.assertEqual(err["type"], "rate_limit_error")
                self.assertEqual(err["code"], "rate_limit_exceeded")
                self.assertIsNone(err["param"])
                self.assertIn("queue is full", err["message"])
        for i in accepted:
            r = results[i]
            with self.subTest(accepted=i):
                if i < slots or i % 2 == 0:
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

        # recovered: the rejected requests, retried a few at a time (shorter), all succeed
        async def retry():
            return await ks.gather_limited(
                (ks.request(self.port, "POST", "/v1/completions",
                            ks.completion_body(f"Burst {i}", 16, stream=i % 2 == 0))
                 for i in rejected), limit=3)

        for i, r in zip(rejected, asyncio.run(retry())):
            self.assertEqual(r.status, 200, f"retry of {i}: {r.status} {r.body[:200]!r}")


if __name__ == "__main__":
    ks.run_main()
