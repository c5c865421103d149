"""(c) Batching is invisible: 32 concurrent greedy streaming clients (distinct prompts, half chat,
half completions, 16 tokens each with ignore_eos) all get complete streams; each request run
alone afterwards gives the same text and token count (reliability.md §E, fp32 CPU path)."""

import asyncio

import kiln_server as ks

CLIENTS = 32
MAX_TOKENS = 16


def body(i):
    prompt = f"Request {i}: tell me about the number {i * 7} and the colour {['red', 'blue'][i % 2]}"
    return ks.completion_body(prompt, MAX_TOKENS, chat=i % 2 == 1)


def path(i):
    return "/v1/chat/completions" if i % 2 == 1 else "/v1/completions"


class BatchingTest(ks.ServerTestCase):
    def run_one(self, i):
        return asyncio.run(ks.request(self.port, "POST", path(i), body(i)))

    def test_batched_equals_alone(self):
        async def burst():
            return await asyncio.gather(*(ks.request(self.port, "POST", path(i), body(i))
                                          for i in range(CLIENTS)))

        batched = [ks.stream_summary(r) for r in asyncio.run(burst())]
        problems = [f"client {i}: {s['problems']}" for i, s in enumerate(batched) if not s["ok"]]
        self.assertEqual(problems, [], "every concurrent stream complete")
        for i, s in enumerate(batched):
            self.assertEqual(s["tokens"], {0: MAX_TOKENS}, f"client {i}")
            self.assertEqual(s["finish"], {0: "length"}, f"client {i}")
            self.assertEqual(s["usage"]["completion_tokens"], MAX_TOKENS, f"client {i}")
        ids = {s["id"] for s in batched}
        self.assertEqual(len(ids), CLIENTS, "each request has its own id")

        mismatches = []
        for i in range(CLIENTS):
            alone = ks.stream_summary(self.run_one(i))
            self.assertTrue(alone["ok"], f"client {i} alone: {alone['problems']}")
            if (alone["texts"], alone["tokens"]) != (batched[i]["texts"], batched[i]["tokens"]):
                mismatches.append(f"client {i} ({path(i)}): batched {batched[i]['texts'][0]!r} "
                                  f"({batched[i]['tokens']}) vs alone {alone['texts'][0]!r} "
                                  f"({alone['tokens']})")
            self.assertEqual(alone["usage"]["prompt_tokens"], batched[i]["usage"]["prompt_tokens"])
        self.assertEqual(mismatches, [], "greedy output differs between batched and alone")

        m = self.server.wait_metrics({"num_requests_running": 0, "kda_slots_used": 0,
                                      "mla_cache_blocks_used": 0})
        self.assertEqual(self.server.metric("requests_total", 'status="200"', m), 2 * CLIENTS)


if __name__ == "__main__":
    ks.run_main()
