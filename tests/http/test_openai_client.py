"""(a) The official openai client against kiln serve (TP 2): completions and chat, streamed and
not, /v1/models, n, logprobs, stop strings, seeds, and errors as the client's exceptions.
The openai package is required: without it this test fails (scripts/python-env.sh installs it)."""

import re

import kiln_server as ks
from kiln_server import MODEL_NAME

openai = ks.require_openai()

GREEDY = {"temperature": 0}
EXACT = {"ignore_eos": True}  # exact token counts (the model is random: EOS can come anywhere)


class OpenAIClientTest(ks.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = openai.OpenAI(base_url=cls.server.base_url + "/v1", api_key="unused",
                                   max_retries=0, timeout=60)

    # -- helpers

    def complete(self, prompt="The quick brown fox", max_tokens=8, **kw):
        extra = kw.pop("extra_body", EXACT)
        return self.client.completions.create(model=MODEL_NAME, prompt=prompt,
                                              max_tokens=max_tokens, extra_body=extra, **kw)

    def chat(self, content="Say something.", max_tokens=8, **kw):
        extra = kw.pop("extra_body", EXACT)
        return self.client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": content}],
            max_tokens=max_tokens, extra_body=extra, **kw)

    def check_stream(self, chunks, chat, n_tokens, n_choices=1):
        """Structure of a stream with include_usage; returns the text of each choice."""
        self.assertTrue(chunks, "empty stream")
        ids = {c.id for c in chunks}
        self.assertEqual(len(ids), 1, f"one id per stream, got {ids}")
        prefix = "chatcmpl-" if chat else "cmpl-"
        self.assertTrue(chunks[0].id.startswith(prefix), chunks[0].id)
        obj = "chat.completion.chunk" if chat else "text_completion"
        for c in chunks:
            self.assertEqual(c.object, obj)
            self.assertEqual(c.model, MODEL_NAME)
        *content, last = chunks
        self.assertEqual(last.choices, [], "the usage chunk has empty choices")
        self.assertIsNotNone(last.usage, "stream_options.include_usage → a final usage chunk")
        texts, counts, finish = {}, {}, {}
        for c in content:
            self.assertIsNone(c.usage, "usage only in the last chunk")
            self.assertEqual(len(c.choices), 1, "one choice per chunk")
            ch = c.choices[0]
            self.assertNotIn(ch.index, finish, f"chunk after choice {ch.index}'s finish_reason")
            if chat:
                if ch.index not in counts:
                    self.assertEqual(ch.delta.role, "assistant", "first chat delta has the role")
                text = ch.delta.content or ""
            else:
                text = ch.text
            texts[ch.index] = texts.get(ch.index, "") + text
            counts[ch.index] = counts.get(ch.index, 0) + 1
            if ch.finish_reason is not None:
                finish[ch.index] = ch.finish_reason
        self.assertEqual(sorted(counts), list(range(n_choices)))
        for i in range(n_choices):
            self.assertEqual(counts[i], n_tokens, f"choice {i}: one chunk per generated token")
            self.assertEqual(finish.get(i), "length", f"choice {i}: finish_reason on last chunk")
        self.assertEqual(last.usage.completion_tokens, n_tokens * n_choices)
        self.assertEqual(last.usage.total_tokens,
                         last.usage.prompt_tokens + last.usage.completion_tokens)
        return texts, last.usage

    # -- tests

    def test_models(self):
        models = self.client.models.list().data
        self.assertEqual([m.id for m in models], [MODEL_NAME])
        m = models[0]
        self.assertEqual(m.object, "model")
        self.assertEqual(m.owned_by, "kiln")
        self.assertIsInstance(m.created, int)
        self.assertEqual((m.model_extra or {}).get("max_model_len"), 4096)

    def test_completion(self):
        r = self.complete(max_tokens=8, **GREEDY)
        self.assertTrue(r.id.startswith("cmpl-"), r.id)
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.model, MODEL_NAME)
        self.assertEqual(len(r.choices), 1)
        self.assertEqual(r.choices[0].index, 0)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertIsInstance(r.choices[0].text, str)
        self.assertEqual(r.usage.completion_tokens, 8)
        tok = ks.http_request(self.port, "POST", "/tokenize",
                              {"prompt": "The quick brown fox"}).json()
        self.assertEqual(r.usage.prompt_tokens, tok["count"], "usage vs /tokenize")
        self.assertEqual(len(tok["tokens"]), tok["count"])
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 8)

    def test_completion_stream_matches_plain(self):
        plain = self.complete(max_tokens=10, **GREEDY)
        chunks = list(self.complete(max_tokens=10, stream=True,
                                    stream_options={"include_usage": True}, **GREEDY))
        texts, usage = self.check_stream(chunks, chat=False, n_tokens=10)
        self.assertEqual(texts[0], plain.choices[0].text, "greedy: stream text == plain text")
        self.assertEqual(usage.prompt_tokens, plain.usage.prompt_tokens)

    def test_chat(self):
        r = self.chat(max_tokens=6, **GREEDY)
        self.assertTrue(r.id.startswith("chatcmpl-"), r.id)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertIsInstance(r.choices[0].message.content, str)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 6)
        chunks = list(self.chat(max_tokens=6, stream=True, stream_options={"include_usage": True},
                                **GREEDY))
        texts, usage = self.check_stream(chunks, chat=True, n_tokens=6)
        self.assertEqual(texts[0], r.choices[0].message.content)
        self.assertEqual(usage.prompt_tokens, r.usage.prompt_tokens)

    def test_stream_without_usage(self):
        chunks = list(self.complete(max_tokens=5, stream=True, **GREEDY))
        self.assertEqual(len(chunks), 5, "no usage chunk unless include_usage")
        self.assertTrue(all(c.usage is None for c in chunks))
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")
        self.assertTrue(all(c.choices[0].finish_reason is None for c in chunks[:-1]))

    def test_n2(self):
        r = self.complete(max_tokens=6, n=2, temperature=0.9, seed=5)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1])
        self.assertTrue(all(c.finish_reason == "length" for c in r.choices))
        self.assertEqual(r.usage.completion_tokens, 12, "usage sums both choices")
        chunks = list(self.chat(max_tokens=4, n=2, stream=True, temperature=0.9, seed=5,
                                stream_options={"include_usage": True}))
        self.check_stream(chunks, chat=True, n_tokens=4, n_choices=2)

    def test_completion_logprobs(self):
        r = self.complete(max_tokens=6, logprobs=3, **GREEDY)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 6)
        self.assertEqual(len(lp.token_logprobs), 6)
        self.assertEqual(len(lp.top_logprobs), 6)
        self.assertEqual(len(lp.text_offset), 6)
        # The text leaves out special tokens ([UNK], <|...|>); the logprob token list names them.
        joined = re.sub(r"\[[A-Z]+\]|<\|[a-z_0-9]+\|>", "", "".join(lp.tokens))
        self.assertEqual(joined, r.choices[0].text)
        for tok, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(p, 0.0)  # also false for NaN
            self.assertTrue(1 <= len(top) <= 3, top)
            for v in top.values():  # max() below would drop a NaN
                self.assertLessEqual(v, 0.0, (tok, top))
            # greedy: the chosen token is the most likely one
            self.assertGreaterEqual(p, max(top.values()) - 1e-4, (tok, p, top))
        # streamed: one logprob entry per chunk
        chunks = list(self.complete(max_tokens=6, logprobs=2, stream=True, **GREEDY))
        self.assertEqual([len(c.choices[0].logprobs.tokens) for c in chunks], [1] * 6)
        for c, want in zip(chunks, lp.token_logprobs):
            self.assertAlmostEqual(c.choices[0].logprobs.token_logprobs[0], want, places=4)

    def test_chat_logprobs(self):
        r = self.chat(max_tokens=5, logprobs=True, top_logprobs=2, **GREEDY)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), 5)
        for entry in content:
            self.assertLessEqual(entry.logprob, 0.0)
            self.assertEqual(len(entry.top_logprobs), 2)
            self.assertGreaterEqual(entry.logprob, entry.top_logprobs[0].logprob - 1e-4)
            self.assertIsInstance(entry.bytes, list)
        # Special tokens (all spelled <|...|> in this vocabulary) are reported in the logprobs,
        # as sampled, but skipped in the text.
        text = "".join(e.token for e in content if not re.fullmatch(r"<\|[^|]+\|>", e.token))
        self.assertEqual(text, r.choices[0].message.content)

    def test_stop_string(self):
        base = self.complete(prompt="Once upon a time", max_tokens=24, **GREEDY).choices[0].text
        # a stop string taken from the middle of the greedy text (skipping whitespace-only)
        stop = None
        for k in range(len(base) // 2, len(base) - 2):
            if base[k:k + 3].strip() and "\ufffd" not in base[k:k + 3]:
                stop = base[k:k + 3]
                break
        self.assertIsNotNone(stop, f"no usable stop string in {base!r}")
        cut = base[:base.find(stop)]
        for stream in (False, True):
            if stream:
                chunks = list(self.complete(prompt="Once upon a time", max_tokens=24,
                                            stop=[stop, "\x01never"], stream=True, **GREEDY))
                text = "".join(c.choices[0].text for c in chunks)
                finish = chunks[-1].choices[0].finish_reason
            else:
                r = self.complete(prompt="Once upon a time", max_tokens=24, stop=stop, **GREEDY)
                text, finish = r.choices[0].text, r.choices[0].finish_reason
            with self.subTest(stream=stream):
                self.assertNotIn(stop, text)
                self.assertEqual(finish, "stop")
                self.assertEqual(text, cut, f"greedy text up to the stop string {stop!r}")

    def test_seed_reproducible(self):
        kw = dict(max_tokens=12, temperature=0.8, seed=1234)
        a = self.complete(**kw).choices[0].text
        b = self.complete(**kw).choices[0].text
        self.assertEqual(a, b, "same seed and request → same text")
        others = {self.complete(max_tokens=12, temperature=0.8, seed=s).choices[0].text
                  for s in (1, 2, 3)}
        self.assertTrue(others - {a}, "other seeds never changed the text")
        c1 = self.chat(**kw).choices[0].message.content
        c2 = self.chat(**kw).choices[0].message.content
        self.assertEqual(c1, c2)

    def test_seed_stream_equals_plain(self):
        kw = dict(max_tokens=12, temperature=0.8, seed=99)
        plain = self.complete(**kw).choices[0].text
        streamed = "".join(c.choices[0].text for c in self.complete(stream=True, **kw))
        self.assertEqual(streamed, plain, "seeded sampling is the same streamed or not")

    def test_extras(self):
        r = self.complete(max_tokens=6, extra_body={"ignore_eos": True, "min_tokens": 6,
                                                    "top_k": 5, "min_p": 0.01,
                                                    "repetition_penalty": 1.1,
                                                    "stop_token_ids": []},
                          temperature=0.7, seed=3)
        self.assertEqual(r.usage.completion_tokens, 6)
        # min_tokens without ignore_eos still gives at least that many tokens
        r = self.complete(max_tokens=8, extra_body={"min_tokens": 8}, **GREEDY)
        self.assertEqual(r.usage.completion_tokens, 8)

    def test_errors(self):
        cases = [
            ("temperature", dict(temperature=-1)),
            ("max_tokens", dict(max_tokens=0)),
            ("n", dict(n=1000)),
            ("top_p", dict(top_p=1.5)),
            ("logprobs", dict(logprobs=50)),
        ]
        for param, kw in cases:
            with self.subTest(param=param):
                kw.setdefault("max_tokens", 4)
                with self.assertRaises(openai.BadRequestError) as cm:
                    self.complete(**kw)
                e = cm.exception
                self.assertEqual(e.status_code, 400)
                self.assertEqual(e.param, param, e.message)
                self.assertEqual(e.type, "invalid_request_error")
                self.assertIn(param, e.message)
        with self.assertRaises(openai.BadRequestError) as cm:  # also before a stream starts
            list(self.chat(max_tokens=4, stream=True, temperature=3))
        self.assertEqual(cm.exception.param, "temperature")
        with self.assertRaises(openai.BadRequestError) as cm:  # prompt + max_tokens > 4096
            self.chat(max_tokens=4090)
        self.assertEqual(cm.exception.param, "max_tokens")
        self.assertEqual(cm.exception.code, "context_length_exceeded")
        with self.assertRaises(openai.NotFoundError) as cm:
            self.client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
        self.assertEqual(cm.exception.code, "model_not_found")
        self.assertEqual(cm.exception.param, "model")
        with self.assertRaises(openai.NotFoundError):
            self.client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        # the next valid request is unaffected
        self.assertEqual(self.complete(max_tokens=3, **GREEDY).usage.completion_tokens, 3)


if __name__ == "__main__":
    ks.run_main()
