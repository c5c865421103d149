#!/usr/bin/env python3
"""Load generator for kiln serve (or any OpenAI-compatible server): N concurrent streaming
clients send a fixed number of requests with a fixed prompt / output length mix, and it reports
requests/s, output tokens/s, time to first token and inter-token latency (p50/p99), and streams
that did not end properly. Standard library only (raw HTTP/1.1 over asyncio, chunked SSE).

  bench/loadgen.py --url http://127.0.0.1:8080 --concurrency 16 --requests 200 \
      --prompt-tokens 128,512 --max-tokens 64 [--chat] [--json out.json]

Prompt lengths are exact when the server has POST /tokenize (kiln does), approximate (one word
per token) otherwise. Output lengths are exact with ignore_eos (the default; --no-ignore-eos to
let the model stop). Exit status: 0 when every accepted request completed (finish_reason, then
[DONE], and as many streamed tokens as usage.completion_tokens), 1 when any stream was incomplete
or no request completed, 2 on bad arguments. Rejections (429/503 ...) are counted and reported
but are not failures unless --fail-on-reject.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

WORDS = ("time person year way day thing man world life hand part child eye woman place work week "
         "case point government company number group problem fact river stone light garden music "
         "window paper story market letter winter summer table silver engine forest cloud").split()


@dataclass
class Result:
    index: int
    prompt_tokens_target: int
    max_tokens: int
    status: int = 0
    error: str | None = None           # transport error or error event
    done: bool = False                 # saw data: [DONE]
    finish_reason: str | None = None
    chunks: int = 0                    # content chunks (one generated token each)
    usage: dict | None = None
    t_send: float = 0.0
    t_first: float | None = None
    t_end: float = 0.0
    gaps: list[float] = field(default_factory=list)
    body: bytes = b""

    @property
    def accepted(self) -> bool:
        return self.status == 200

    @property
    def complete(self) -> bool:
        return (self.accepted and self.error is None and self.done and
                self.finish_reason is not None and self.usage is not None and
                self.usage.get("completion_tokens") == self.chunks)


class Http:
    def __init__(self, url: str, api_key: str | None, timeout: float):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"loadgen: --url must be http://HOST:PORT, not {url!r}")
        self.host = u.hostname
        self.port = u.port or 80
        self.prefix = re.sub(r"/v1/?$", "", u.path.rstrip("/"))
        self.api_key = api_key
        self.timeout = timeout
        self.tokenize_statuses: dict[str, int] = {}  # POST /tokenize answers, by status

    async def request(self, method: str, path: str, body: dict | None = None, on_data=None):
        """(status, headers, body bytes). on_data(bytes) gets the de-chunked body as it comes
        (and the body is then not kept)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            head = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                    "Connection: close", "Accept: */*"]
            if body is not None:
                head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
            if self.api_key:
                head.append(f"Authorization: Bearer {self.api_key}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), self.timeout)
            m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
            if not m:
                raise ConnectionError(f"bad status line {line[:80]!r}")
            status = int(m.group(1))
            headers = {}
            while True:
                line = await asyncio.wait_for(reader.readline(), self.timeout)
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    raise ConnectionError("connection closed in the headers")
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            out = bytearray()

            def consume(piece: bytes):
                if on_data is not None and status == 200:
                    on_data(piece)
                else:
                    out.extend(piece)

            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = await asyncio.wait_for(reader.readline(), self.timeout)
                    if not size_line:
                        raise ConnectionError("connection closed inside the chunked body")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        await asyncio.wait_for(reader.readline(), self.timeout)
                        break
                    piece = await asyncio.wait_for(reader.readexactly(size + 2), self.timeout)
                    consume(piece[:-2])
            elif "content-length" in headers:
                n = int(headers["content-length"])
                consume(await asyncio.wait_for(reader.readexactly(n), self.timeout) if n else b"")
            else:
                while piece := await asyncio.wait_for(reader.read(65536), self.timeout):
                    consume(piece)
            return status, headers, bytes(out)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


def filler(seed: int, n_words: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(WORDS) for _ in range(n_words)]


async def count_tokens(http: Http, text: str, chat: bool) -> int | None:
    body = {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
    try:
        status, _, data = await http.request("POST", "/tokenize", body)
    except (OSError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        return None
    http.tokenize_statuses[str(status)] = http.tokenize_statuses.get(str(status), 0) + 1
    if status != 200:
        return None
    return int(json.loads(data)["count"])


async def make_prompt(http: Http, index: int, target: int, chat: bool,
                      have_tokenize: list[bool]) -> tuple[str, bool]:
    """A prompt distinct per request, and whether it is exactly `target` tokens as the server
    counts them (chat template included): the most filler words that fit, found by bisection
    with POST /tokenize, then " a" pads to close the gap. Without /tokenize, one word per
    token (approximate)."""
    head = f"Request {index}:"
    words = filler(index, target)

    def text(n: int, pad: int = 0) -> str:
        return head + "".join(" " + w for w in words[:n]) + " a" * pad

    if not have_tokenize[0]:
        return text(max(0, target - 3)), False
    counts: dict[int, int] = {}

    async def count(n: int, pad: int = 0) -> int | None:
        c = await count_tokens(http, text(n, pad), chat)
        if c is None:
            have_tokenize[0] = False
        return c

    c0 = await count(0)
    if c0 is None:
        return text(max(0, target - 3)), False
    if c0 >= target:
        return text(0), c0 == target
    counts[0] = c0
    lo, hi = 0, target  # every word is at least one token
    while lo < hi:
        mid = (lo + hi + 1) // 2
        c = await count(mid)
        if c is None:
            return text(lo), False
        if c <= target:
            counts[mid] = c
            lo = mid
        else:
            hi = mid - 1
    got, pad = counts[lo], 0
    for _ in range(6):
        if got == target:
            return text(lo, pad), True
        pad += target - got
        if pad < 0:
            break
        c = await count(lo, pad)
        if c is None:
            break
        got = c
    return text(lo, max(pad, 0)), False


async def one_request(http: Http, args, model: str, res: Result, prompt: str) -> None:
    body: dict = {"model": model, "max_tokens": res.max_tokens, "temperature": args.temperature,
                  "stream": True, "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        body["ignore_eos"] = True
    if args.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = prompt
        path = "/v1/completions"
    buf = bytearray()
    last = [0.0]

    def on_data(piece: bytes):
        buf.extend(piece)
        now = time.monotonic()
        while True:
            i = buf.find(b"\n\n")
            if i < 0:
                return
            block = bytes(buf[:i])
            del buf[:i + 2]
            for line in block.split(b"\n"):
                if not line.startswith(b"data: "):
                    continue  # ":" pings
                payload = line[6:]
                if res.done:
                    res.error = res.error or "event after [DONE]"
                    continue
                if payload == b"[DONE]":
                    res.done = True
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    res.error = f"data is not JSON: {payload[:100]!r}"
                    continue
                if "error" in chunk:
                    res.error = "error event: " + str(chunk["error"].get("message"))
                    continue
                if chunk.get("usage") and not chunk.get("choices"):
                    res.usage = chunk["usage"]
                    continue
                for ch in chunk.get("choices") or []:
                    res.chunks += 1
                    if res.t_first is None:
                        res.t_first = now
                    else:
                        res.gaps.append(now - last[0])
                    last[0] = now
                    if ch.get("finish_reason") is not None:
                        res.finish_reason = ch["finish_reason"]

    res.t_send = time.monotonic()
    try:
        res.status, _, res.body = await http.request("POST", path, body, on_data)
    except (OSError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError,
            ValueError) as e:
        res.error = f"{type(e).__name__}: {e}"
    res.t_end = time.monotonic()


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))  # nearest rank
    return s[k]


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


async def main_async(args) -> int:
    http = Http(args.url, args.api_key, args.timeout)
    model = args.model
    if model is None:
        try:
            status, _, data = await http.request("GET", "/v1/models")
            model = json.loads(data)["data"][0]["id"] if status == 200 else None
        except (OSError, asyncio.TimeoutError, ConnectionError, ValueError, KeyError,
                IndexError) as e:
            print(f"loadgen: cannot reach {args.url}: {e}", file=sys.stderr)
            return 1
        if model is None:
            print(f"loadgen: GET /v1/models answered {status}; give --model", file=sys.stderr)
            return 1

    mix = [(p, m) for p in args.prompt_tokens for m in args.max_tokens]
    results = [Result(i, *mix[i % len(mix)]) for i in range(args.requests)]
    have_tokenize = [True]
    sem = asyncio.Semaphore(max(1, args.concurrency))

    async def prompt_for(r: Result):
        async with sem:
            return await make_prompt(http, r.index + args.seed * 1000003,
                                     r.prompt_tokens_target, args.chat, have_tokenize)

    made = await asyncio.gather(*(prompt_for(r) for r in results))
    prompts = [t for t, _ in made]
    exact = sum(1 for _, e in made if e)

    next_index = 0

    async def worker():
        nonlocal next_index
        while next_index < len(results):
            r = results[next_index]
            next_index += 1
            await one_request(http, args, model, r, prompts[r.index])

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(max(1, min(args.concurrency,
                                                              args.requests)))))
    wall = max(time.monotonic() - t0, 1e-9)

    completed = [r for r in results if r.complete]
    accepted = [r for r in results if r.accepted]
    incomplete = [r for r in results if r.accepted and not r.complete or
                  (not r.accepted and r.status == 0)]
    rejected: dict[str, int] = {}
    for r in results:
        if r.status not in (0, 200):
            rejected[str(r.status)] = rejected.get(str(r.status), 0) + 1
    ttft = [r.t_first - r.t_send for r in completed if r.t_first is not None]
    itl = [g for r in completed for g in r.gaps]
    e2e = [r.t_end - r.t_send for r in completed]
    out_tokens = sum(r.chunks for r in accepted)

    def ms(v):
        return None if v is None else round(v * 1000, 3)

    report = {
        "url": args.url, "model": model, "endpoint": "chat" if args.chat else "completions",
        "concurrency": args.concurrency, "requests": args.requests,
        "prompt_tokens_mix": args.prompt_tokens, "max_tokens_mix": args.max_tokens,
        "exact_prompt_lengths": exact == len(results),
        "prompts_of_exact_length": exact,
        "tokenize_requests": http.tokenize_statuses,
        "completed": len(completed), "incomplete": len(incomplete), "rejected": rejected,
        "duration_s": round(wall, 4),
        "requests_per_s": round(len(completed) / wall, 3),
        "output_tokens_per_s": round(out_tokens / wall, 2),
        "output_tokens": out_tokens,
        "prompt_tokens": sum((r.usage or {}).get("prompt_tokens", 0) for r in accepted),
        "completion_tokens": sum((r.usage or {}).get("completion_tokens", 0) for r in accepted),
        "ttft_ms_p50": ms(pct(ttft, 50)), "ttft_ms_p99": ms(pct(ttft, 99)),
        "itl_ms_p50": ms(pct(itl, 50)), "itl_ms_p99": ms(pct(itl, 99)),
        "e2e_ms_p50": ms(pct(e2e, 50)), "e2e_ms_p99": ms(pct(e2e, 99)),
        "incomplete_details": [
            {"index": r.index, "status": r.status, "error": r.error, "done": r.done,
             "finish_reason": r.finish_reason, "chunks": r.chunks,
             "usage_completion_tokens": (r.usage or {}).get("completion_tokens")}
            for r in incomplete[:20]],
    }
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    if args.json != "-":
        def f(v, unit=" ms"):
            return "n/a" if v is None else f"{v:.1f}{unit}"
        print(f"{report['endpoint']} x {args.requests} requests, concurrency {args.concurrency}, "
              f"prompt {args.prompt_tokens} tokens"
              f"{'' if exact == len(results) else f' ({len(results) - exact} not exact)'}, max_tokens {args.max_tokens}")
        print(f"  completed      {len(completed)} in {wall:.2f} s  "
              f"({report['requests_per_s']:.2f} req/s, {report['output_tokens_per_s']:.1f} "
              f"output tokens/s)")
        print(f"  TTFT           p50 {f(report['ttft_ms_p50'])}  p99 {f(report['ttft_ms_p99'])}")
        print(f"  inter-token    p50 {f(report['itl_ms_p50'])}  p99 {f(report['itl_ms_p99'])}")
        print(f"  end-to-end     p50 {f(report['e2e_ms_p50'])}  p99 {f(report['e2e_ms_p99'])}")
        print(f"  rejected       {rejected or 0}")
        print(f"  incomplete     {len(incomplete)}")
        for d in report["incomplete_details"]:
            print(f"    request {d['index']}: {d}")
    if incomplete or not completed:
        return 1
    if args.fail_on_reject and rejected:
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--model", help="model id (default: the first of GET /v1/models)")
    p.add_argument("--concurrency", type=int, default=8, help="clients at once (default 8)")
    p.add_argument("--requests", type=int, default=64, help="requests in all (default 64)")
    p.add_argument("--prompt-tokens", type=int_list, default=[128],
                   help="prompt lengths in tokens, e.g. 32,512 (the mix cycles; default 128)")
    p.add_argument("--max-tokens", type=int_list, default=[64],
                   help="output lengths, e.g. 16,128 (crossed with --prompt-tokens; default 64)")
    p.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    p.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let the model end early at EOS (output lengths then vary)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds for any one network operation (default 300)")
    p.add_argument("--seed", type=int, default=0, help="varies the prompts' words")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-': stdout, "
                                                  "and no text report)")
    p.add_argument("--fail-on-reject", action="store_true",
                   help="exit 1 when any request was rejected (429, 503, ...)")
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1:
        p.error("--concurrency and --requests must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
