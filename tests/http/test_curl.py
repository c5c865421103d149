"""(b) curl against kiln serve (TP 2) with an API key and a small body limit: raw SSE framing
(`data: ` events, `data: [DONE]` last, nothing after), error bodies in the OpenAI envelope
(400 naming the parameter, 413 over server.max_body_bytes, 404, 405, 401 without the key) and
/health* open without a key."""

import json
import re
import shutil
import subprocess

import kiln_server as ks
from kiln_server import MODEL_NAME

KEY = "sk-kiln-test-0123456789"
MAX_BODY = 4096


class CurlTest(ks.ServerTestCase):
    SETS = {"server.max_body_bytes": MAX_BODY}

    @classmethod
    def setUpClass(cls):
        if shutil.which(ks.CURL) is None:
            raise AssertionError(f"curl ({ks.CURL}) not found; install curl")
        key_file = ks.work_dir() / "api-keys.txt"
        key_file.write_text(f"# test keys\n\nsk-other-key\n{KEY}\n")
        cls.ARGS = ["--api-key-file", str(key_file)]
        super().setUpClass()

    def curl(self, path, body=None, key=KEY, method=None, extra=()):
        """(status, headers (lower-case names), body text) of one curl call."""
        cmd = [ks.CURL, "-sS", "-N", "--http1.1", "-i", "--max-time", "60"]
        if key is not None:
            cmd += ["-H", f"Authorization: Bearer {key}"]
        if body is not None:
            data = body if isinstance(body, str) else json.dumps(body)
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        else:
            data = None
        if method:
            cmd += ["-X", method]
        cmd += list(extra) + [f"{self.server.base_url}{path}"]
        r = subprocess.run(cmd, input=data.encode() if data is not None else None,
                           capture_output=True, timeout=90)
        self.assertEqual(r.returncode, 0, f"curl failed: {r.stderr.decode(errors='replace')}")
        raw = r.stdout.decode("utf-8")
        # skip "HTTP/1.1 100 Continue" blocks
        while True:
            head, _, rest = raw.partition("\r\n\r\n")
            if re.match(r"HTTP/1\.1 100", head):
                raw = rest
                continue
            break
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers, rest

    def assert_envelope(self, status, body, want_status, param=..., type_=None, code=...):
        self.assertEqual(status, want_status, body)
        doc = json.loads(body)
        self.assertEqual(list(doc), ["error"], body)
        err = doc["error"]
        self.assertEqual(sorted(err), ["code", "message", "param", "type"], body)
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"])
        if param is not ...:
            self.assertEqual(err["param"], param, body)
        if type_ is not None:
            self.assertEqual(err["type"], type_, body)
        if code is not ...:
            self.assertEqual(err["code"], code, body)
        for leak in ("/work", ".cpp", "0x7f"):
            self.assertNotIn(leak, err["message"])
        return err

    def check_sse(self, body, n_tokens, chat):
        self.assertTrue(body.endswith("data: [DONE]\n\n"), f"last event must be [DONE]: "
                                                           f"{body[-200:]!r}")
        blocks = body.split("\n\n")
        self.assertEqual(blocks[-1], "", "the stream ends with a blank line")
        blocks = blocks[:-1]
        self.assertEqual(blocks.count("data: [DONE]"), 1)
        content, usage = 0, None
        for b in blocks[:-1]:
            if b.startswith(":"):  # keep-alive comment
                continue
            self.assertTrue(b.startswith("data: ") and "\n" not in b, f"bad event {b!r}")
            chunk = json.loads(b[len("data: "):])
            self.assertEqual(chunk["object"], "chat.completion.chunk" if chat else
                             "text_completion")
            if chunk["choices"]:
                content += 1
            else:
                usage = chunk["usage"]
        self.assertEqual(content, n_tokens)
        self.assertIsNotNone(usage)
        self.assertEqual(usage["completion_tokens"], n_tokens)

    # -- streams

    def test_sse_framing_completions(self):
        status, headers, body = self.curl("/v1/completions", ks.completion_body("Hello", 7))
        self.assertEqual(status, 200, body)
        self.assertTrue(headers.get("content-type", "").startswith("text/event-stream"), headers)
        self.check_sse(body, 7, chat=False)

    def test_sse_framing_chat(self):
        status, headers, body = self.curl("/v1/chat/completions",
                                          ks.completion_body("Hello", 5, chat=True))
        self.assertEqual(status, 200, body)
        self.assertTrue(headers.get("content-type", "").startswith("text/event-stream"), headers)
        self.check_sse(body, 5, chat=True)

    def test_plain_json(self):
        status, headers, body = self.curl("/v1/completions",
                                          ks.completion_body("Hello", 4, stream=False))
        self.assertEqual(status, 200, body)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        self.assertEqual(json.loads(body)["usage"]["completion_tokens"], 4)

    def test_tokenize_roundtrip(self):
        status, _, body = self.curl("/tokenize", {"prompt": "Hello world"})
        self.assertEqual(status, 200, body)
        tok = json.loads(body)
        self.assertEqual(tok["count"], len(tok["tokens"]))
        status, _, body = self.curl("/detokenize", {"tokens": tok["tokens"]})
        self.assertEqual(status, 200, body)
        self.assertIn("Hello world", json.loads(body)["prompt"])

    # -- errors

    def test_400_names_param(self):
        cases = [
            ("max_tokens", {"model": MODEL_NAME, "prompt": "hi", "max_tokens": -3}),
            ("temperature", {"model": MODEL_NAME, "prompt": "hi", "temperature": "hot"}),
            ("top_p", {"model": MODEL_NAME, "prompt": "hi", "top_p": -0.5}),
            ("n", {"model": MODEL_NAME, "prompt": "hi", "n": 0}),
            ("prompt", {"model": MODEL_NAME, "prompt": ""}),
            ("messages", {"model": MODEL_NAME, "messages": []}),
        ]
        for param, body in cases:
            with self.subTest(param=param):
                path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
                status, _, text = self.curl(path, body)
                err = self.assert_envelope(status, text, 400, type_="invalid_request_error")
                self.assertEqual(err["param"], param, text)
                self.assertIn(f"'{param}'", err["message"])
        for raw in ("{", "[1,2]", '{"prompt": "hi", "model": "' + MODEL_NAME + '",}'):
            with self.subTest(raw=raw):
                status, _, text = self.curl("/v1/completions", raw)
                self.assert_envelope(status, text, 400, type_="invalid_request_error")
        # a stream request with a bad value fails before the stream starts
        status, headers, text = self.curl("/v1/completions", ks.completion_body(
            "hi", 4, temperature=-2))
        self.assert_envelope(status, text, 400, param="temperature")
        # the next valid request is unaffected
        status, _, text = self.curl("/v1/completions", ks.completion_body("hi", 2, stream=False))
        self.assertEqual(status, 200, text)

    def test_413_body_over_limit(self):
        body = {"model": MODEL_NAME, "prompt": "x " * MAX_BODY, "max_tokens": 1}
        status, headers, text = self.curl("/v1/completions", body)
        self.assert_envelope(status, text, 413, type_="invalid_request_error")
        # also when curl waits for 100-continue first, and for a body just over the limit
        body = {"model": MODEL_NAME, "prompt": "y" * (MAX_BODY - 40), "max_tokens": 1}
        self.assertGreater(len(json.dumps(body)), MAX_BODY)
        status, headers, text = self.curl("/v1/completions", body,
                                          extra=["-H", "Expect: 100-continue"])
        self.assert_envelope(status, text, 413)
        status, _, text = self.curl("/v1/completions", ks.completion_body("ok", 2, stream=False))
        self.assertEqual(status, 200, text)

    def test_413_chunked_body(self):
        # no Content-Length: the limit is applied to the chunks as they arrive
        body = {"model": MODEL_NAME, "prompt": "z" * (2 * MAX_BODY), "max_tokens": 1}
        status, _, text = self.curl("/v1/completions", body,
                                    extra=["-H", "Transfer-Encoding: chunked"])
        self.assert_envelope(status, text, 413)
        small = ks.completion_body("chunked but small", 2, stream=False)
        status, _, text = self.curl("/v1/completions", small,
                                    extra=["-H", "Transfer-Encoding: chunked"])
        self.assertEqual(status, 200, text)

    def test_no_cors_by_default(self):
        for path, body in (("/v1/models", None), ("/v1/completions",
                                                  ks.completion_body("hi", 2, stream=False))):
            status, headers, text = self.curl(path, body,
                                              extra=["-H", "Origin: http://elsewhere.example"])
            self.assertEqual(status, 200, text)
            self.assertNotIn("access-control-allow-origin", headers)

    def test_404_405(self):
        status, _, text = self.curl("/v1/nothing-here")
        self.assert_envelope(status, text, 404, type_="invalid_request_error")
        status, _, text = self.curl("/v2/completions", {"prompt": "hi"})
        self.assert_envelope(status, text, 404)
        status, _, text = self.curl("/v1/completions", {"model": "gpt-4", "prompt": "hi"})
        self.assert_envelope(status, text, 404, param="model", code="model_not_found")
        status, _, text = self.curl("/v1/completions", method="GET")
        self.assert_envelope(status, text, 405)

    def test_401_without_key(self):
        for key in (None, "wrong-key", KEY + "x", KEY[:-1], ""):
            for path, body in (("/v1/models", None), ("/v1/completions",
                                                      ks.completion_body("hi", 2)),
                               ("/tokenize", {"prompt": "hi"}), ("/nonexistent", None)):
                with self.subTest(key=key, path=path):
                    status, headers, text = self.curl(path, body, key=key)
                    self.assert_envelope(status, text, 401, type_="authentication_error",
                                         code="invalid_api_key")
                    self.assertIn("www-authenticate", headers)
        status, _, text = self.curl("/v1/models", key="sk-other-key")
        self.assertEqual(status, 200, "every key of the file is accepted")
        self.assertEqual(json.loads(text)["data"][0]["id"], MODEL_NAME)

    def test_health_and_metrics_without_key(self):
        for path in ("/health", "/health/live", "/health/ready"):
            with self.subTest(path=path):
                status, _, text = self.curl(path, key=None)
                self.assertEqual(status, 200, text)
                self.assertEqual(json.loads(text)["status"], "ok")
        status, headers, text = self.curl("/metrics", key=None)
        self.assertEqual(status, 200, "server.metrics_require_key is false by default")
        self.assertIn("kiln:requests_total", text)
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"), headers)


if __name__ == "__main__":
    ks.run_main()
