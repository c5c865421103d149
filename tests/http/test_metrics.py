"""(g) The metrics agree with the clients: after a known mix of requests on a fresh server
(plain and streamed, completions and chat, n=2, a stop at EOS, errors, and two runs of
bench/loadgen.py) requests_total by status, prompt_tokens_total and generation_tokens_total
equal what the clients counted from usage (serving.md: "The counters must agree with what
clients saw"). Also checks that loadgen's prompt lengths are exact and it reports no incomplete
stream."""

import asyncio
import json
import subprocess
import sys

import kiln_server as ks
from kiln_server import MODEL_NAME


class MetricsTest(ks.ServerTestCase):
    def test_counters_match_clients(self):
        ok = prompt = completion = 0
        errors = {}

        def plain(path, body):
            nonlocal ok, prompt, completion
            r = self.server.post(path, body)
            if r.status != 200:
                errors[r.status] = errors.get(r.status, 0) + 1
                return r
            ok += 1
            u = r.json().get("usage")
            if u:
                prompt += u["prompt_tokens"]
                completion += u["completion_tokens"]
            return r

        for n in (5, 7, 9):
            plain("/v1/completions", ks.completion_body(f"Counting {n}", n, stream=False))
        r = plain("/v1/completions", ks.completion_body("Two of them", 4, stream=False, n=2,
                                                        temperature=0.5, seed=1))
        self.assertEqual(r.json()["usage"]["completion_tokens"], 8)
        r = plain("/v1/chat/completions", {"model": MODEL_NAME, "max_tokens": 30,
                                           "messages": [{"role": "user", "content": "Hi"}]})
        self.assertEqual(r.status, 200, r.body)  # may stop at EOS: usage says how many
        r = plain("/tokenize", {"prompt": "counted as a 200, no tokens"})
        self.assertEqual(r.status, 200, r.body)
        plain("/v1/completions", {"model": MODEL_NAME, "prompt": "x", "max_tokens": -1})
        plain("/v1/chat/completions", {"model": MODEL_NAME, "messages": "not a list"})
        plain("/v1/completions", {"model": "other-model", "prompt": "x"})
        self.assertEqual(errors, {400: 2, 404: 1})

        async def streams():
            return await asyncio.gather(
                ks.request(self.port, "POST", "/v1/chat/completions",
                           ks.completion_body("Stream one", 6, chat=True)),
                ks.request(self.port, "POST", "/v1/chat/completions",
                           ks.completion_body("Stream two", 3, chat=True, n=2,
                                              temperature=0.7, seed=2)),
                ks.request(self.port, "POST", "/v1/completions",
                           ks.completion_body("Stream three", 11)))

        for res in asyncio.run(streams()):
            s = ks.stream_summary(res)
            self.assertTrue(s["ok"], s["problems"])
            self.assertEqual(s["usage"]["completion_tokens"], sum(s["tokens"].values()))
            ok += 1
            prompt += s["usage"]["prompt_tokens"]
            completion += s["usage"]["completion_tokens"]

        # everything so far was counted by the clients exactly
        self.server.wait_metrics({
            'requests_total{status="200"}': ok, 'requests_total{status="400"}': 2,
            'requests_total{status="404"}': 1, "prompt_tokens_total": prompt,
            "generation_tokens_total": completion, "num_requests_running": 0,
            "kda_slots_used": 0, "mla_cache_blocks_used": 0}, timeout=10)
        m = self.server.metrics()
        statuses = {labels for (name, labels) in m if name == "kiln:requests_total"}
        self.assertEqual(statuses, {'{status="200"}', '{status="400"}', '{status="404"}'})

        # bench/loadgen.py: exact prompt lengths, nothing incomplete, and its usage totals are
        # what the token counters add; requests_total{200} grows by its requests and the
        # /tokenize calls it reports
        for extra, n_req, want_prompt, want_completion in (
                (["--prompt-tokens", "8,24", "--max-tokens", "4,12", "--concurrency", "4"], 12,
                 3 * (8 + 8 + 24 + 24), 3 * (4 + 12 + 4 + 12)),
                (["--chat", "--prompt-tokens", "80", "--max-tokens", "5", "--concurrency", "2"],
                 4, 4 * 80, 4 * 5)):
            cmd = [sys.executable, ks.LOADGEN, "--url", self.server.base_url, "--requests",
                   str(n_req), "--json", "-"] + extra
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, f"{cmd}: {r.stdout}{r.stderr}")
            rep = json.loads(r.stdout)
            self.assertEqual(rep["completed"], n_req, rep)
            self.assertEqual(rep["incomplete"], 0, rep)
            self.assertEqual(rep["rejected"], {}, rep)
            self.assertTrue(rep["exact_prompt_lengths"], rep)
            self.assertEqual(rep["prompt_tokens"], want_prompt, rep)
            self.assertEqual(rep["completion_tokens"], want_completion, rep)
            self.assertEqual(rep["output_tokens"], want_completion, rep)
            for k in ("requests_per_s", "output_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99",
                      "itl_ms_p50", "itl_ms_p99"):
                self.assertIsNotNone(rep[k], k)
                self.assertGreater(rep[k], 0, k)
            self.assertEqual(list(rep["tokenize_requests"]), ["200"], rep)
            ok += rep["completed"] + rep["tokenize_requests"]["200"]
            prompt += rep["prompt_tokens"]
            completion += rep["completion_tokens"]
            self.server.wait_metrics({"prompt_tokens_total": prompt,
                                      "generation_tokens_total": completion,
                                      'requests_total{status="200"}': ok,
                                      'requests_total{status="400"}': 2,
                                      'requests_total{status="404"}': 1}, timeout=10)


if __name__ == "__main__":
    ks.run_main()
