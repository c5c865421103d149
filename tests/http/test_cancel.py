"""(d) Cancellation: 20 streaming clients that disconnect after their first token, next to one
normal request that must complete untouched; afterwards every KDA slot and MLA cache block is
free and nothing runs (reliability.md §B: a disconnect aborts the sequence within one step).
Then clients that close right after sending (still queued) leave nothing behind either.

"Within one step" is checked on the server's own count. Rank 0 logs each client abort with the
tokens the request generated in all and after the gateway cancelled it (the moment the server
knows the client is gone). A step decodes one token per running choice, so the step under way at
the cancel may add one token per choice and nothing more: after ≤ n, exactly. The log must account
for every generated token (its sums equal kiln:generation_tokens_total), so a request that went
on generating cannot hide outside it. How fast the gateway notices a closed socket is the
gateway's contract, bounded in tests/gateway (gateway_async_test: cancel() after a disconnect)."""

import asyncio
import json
import re
import time

import kiln_server as ks

LEAVERS = 20
LONG = 2000       # tokens the leavers ask for: far more than they could get before aborting
NORMAL = 32


ABORT = re.compile(r"request (\S+): client gone, aborted after (\d+) generated token\(s\), "
                   r"(\d+) after the disconnect \((\d+) choice\(s\)\)")


class CancelTest(ks.ServerTestCase):
    def client_aborts(self, want: int, skip: int = 0) -> list[tuple[str, int, int, int]]:
        """The server log's client-abort lines after the first `skip`: (id, tokens, tokens after
        the cancel, choices); waits until there are `want` of them."""
        deadline = time.monotonic() + 10
        while True:
            found = [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
                     for m in ABORT.finditer(self.server.log())][skip:]
            if len(found) >= want or time.monotonic() > deadline:
                self.assertEqual(len(found), want, "client-abort lines in the server log:\n"
                                 + self.server.log_tail())
                return found

    def assert_within_one_step(self, aborts):
        for rid, tokens, after, n in aborts:
            # one step = one decode token per running choice
            self.assertLessEqual(after, n, f"{rid}: {tokens} tokens, {after} generated after the "
                                           f"cancel: the abort took more than one step")
            self.assertLessEqual(after, tokens, rid)

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
        aborts = self.client_aborts(LEAVERS)
        print(f"{LEAVERS} leavers of {LONG} tokens + {NORMAL}: {generated:g} tokens generated; "
              f"per leaver (in all/after the cancel): "
              + " ".join(f"{t}/{a}" for _, t, a, _ in aborts))
        self.assert_within_one_step(aborts)
        by_id = {rid: tokens for rid, tokens, _, _ in aborts}
        for i, r in enumerate(leavers):
            rid = r.content_chunks()[0]["id"]
            self.assertIn(rid, by_id, f"leaver {i} ({rid}) was never aborted")
            self.assertGreaterEqual(by_id[rid], 1, f"leaver {i} got a token the log does not count")
        self.assertEqual(sum(by_id.values()) + NORMAL, generated,
                         "tokens generated outside the normal request and the logged aborts")

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
        early = self.client_aborts(24, skip=LEAVERS)
        self.assert_within_one_step(early)
        self.assertEqual(sum(t for _, t, _, _ in early) + 8, generated2 - generated,
                         "sequences of clients that left early kept running")


if __name__ == "__main__":
    ks.run_main()
