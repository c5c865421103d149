"""Shared fixture of the HTTP integration tests: a micro model, `kiln serve` under mpirun (TP 2,
one thread per rank) on a free port, and small HTTP clients (blocking and asyncio, stdlib only).

Environment (set by tests/http/CMakeLists.txt; defaults let a script run by hand from a build):
  KILN_BIN        the kiln binary                  (default: build/launcher/kiln)
  KILN_MPIEXEC    mpirun                            (default: mpirun)
  KILN_CURL       curl                              (default: curl)
  KILN_HTTP_WORK  folder for models and server logs (default: a temporary folder)
  KILN_HTTP_VERBOSE=1  print each server's log when it stops
"""

from __future__ import annotations

import asyncio
import atexit
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[2]
KILN_BIN = os.environ.get("KILN_BIN", str(REPO / "build" / "launcher" / "kiln"))
MPIEXEC = os.environ.get("KILN_MPIEXEC", "mpirun")
CURL = os.environ.get("KILN_CURL", "curl")
LOADGEN = os.environ.get("KILN_LOADGEN", str(REPO / "bench" / "loadgen.py"))
MODEL_NAME = "kiln-micro"

# Only loopback and shared memory here (as tests/mpi/CMakeLists.txt); kept if already set.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
    "OMPI_MCA_mpi_yield_when_idle": "1",
}

_work_dir: Path | None = None

# SIGTERM (e.g. from ctest) runs the atexit handlers below: no server is left running.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def work_dir() -> Path:
    global _work_dir
    if _work_dir is None:
        base = os.environ.get("KILN_HTTP_WORK")
        if base:
            Path(base).mkdir(parents=True, exist_ok=True)
            _work_dir = Path(base)
        else:
            _work_dir = Path(tempfile.mkdtemp(prefix="kiln-http-"))
            # (registered before any server's kill, so it runs after them)
            atexit.register(shutil.rmtree, _work_dir, True)
    return _work_dir


def require_openai():
    """The openai module; a clear failure (not a skip) when it cannot be imported."""
    try:
        import openai  # noqa: PLC0415
    except ImportError as e:
        raise AssertionError(
            f"the 'openai' package cannot be imported by {sys.executable} ({e}); run "
            "scripts/python-env.sh (it makes build/pyenv, which the tests use when it exists), "
            "or configure with -DKILN_PYTHON=<a python that has openai>") from None
    return openai


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def micro_model() -> Path:
    """model.gguf of `kiln make-model --preset micro --dtype f32 --seed 7`, made once per kiln
    binary (cached in the work folder under a name keyed by the binary's size and time)."""
    if not os.access(KILN_BIN, os.X_OK):
        raise AssertionError(f"kiln binary {KILN_BIN} not found (build the 'kiln' target)")
    st = os.stat(KILN_BIN)
    final = work_dir() / f"micro-f32-s7-{st.st_size}-{st.st_mtime_ns}"
    _prune(keep=final)
    if (final / "model.gguf").exists():
        return final / "model.gguf"
    tmp = Path(tempfile.mkdtemp(prefix="model-", dir=work_dir()))
    r = subprocess.run([KILN_BIN, "make-model", "--preset", "micro", "--dtype", "f32", "--seed",
                        "7", "--out", str(tmp)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not (tmp / "model.gguf").exists():
        raise AssertionError(f"make-model failed ({r.returncode}): {r.stdout}{r.stderr}")
    try:
        os.rename(tmp, final)  # atomic; another test may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.gguf"


def _prune(keep: Path) -> None:
    """Drops models made by older binaries and server logs older than a day."""
    now = time.time()
    for p in work_dir().iterdir():
        try:
            if p.is_dir() and p.name.startswith("micro-") and p != keep and \
                    now - p.stat().st_mtime > 600:
                shutil.rmtree(p, ignore_errors=True)
            elif p.suffix == ".log" and now - p.stat().st_mtime > 86400:
                p.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Blocking HTTP


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(port: int, method: str, path: str, body: Any = None, headers: dict | None = None,
         timeout: float = 60) -> Reply:
    """One request on a fresh connection; `body` a dict (sent as JSON), str or bytes."""
    h = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        h.setdefault("Content-Type", "application/json")
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text → {(name, labels-as-written): value} (comment lines skipped)."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$', line)
        if not m:
            raise AssertionError(f"not a Prometheus sample line: {line!r}")
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


# ---------------------------------------------------------------------------------------------
# The server


class KilnServer:
    """`mpirun -np RANKS kiln serve --model MICRO --port P --threads 1 --set K=V ...`."""

    def __init__(self, sets: dict[str, Any] | None = None, args: Iterable[str] = (),
                 ranks: int = 2, tag: str = "server"):
        self.sets = dict(sets or {})
        self.args = list(args)
        self.ranks = ranks
        self.tag = tag
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.returncode: int | None = None
        self._rank0: int | None = None

    # -- life cycle

    def start(self, ready_timeout: float = 60) -> "KilnServer":
        for attempt in range(3):
            try:
                return self._start(ready_timeout)
            except AssertionError:
                # the free port was taken by someone else between our probe and the bind
                if attempt == 2 or "Address already in use" not in self.log():
                    raise
        raise AssertionError("unreachable")

    def _start(self, ready_timeout: float) -> "KilnServer":
        model = micro_model()
        self.port = free_port()
        cmd = [MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", str(self.ranks),
               KILN_BIN, "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), "--threads", "1", "--served-model-name", MODEL_NAME]
        cmd += self.args
        for k, v in self.sets.items():
            cmd += ["--set", f"{k}={v}"]
        return self._spawn(cmd, ready_timeout)

    def _spawn(self, cmd: list[str], ready_timeout: float) -> "KilnServer":
        """Runs `cmd` (the job; self.port already chosen) in a new session, logging to a file,
        and waits until /health/ready is 200."""
        env = dict(os.environ)
        for k, v in MPI_ENV.items():
            env.setdefault(k, v)
        fd, log = tempfile.mkstemp(prefix=f"{self.tag}-{self.port}-", suffix=".log",
                                   dir=work_dir())
        self.log_path = Path(log)
        with os.fdopen(fd, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        atexit.register(self.kill)  # never leave a job behind, whatever happens to the test
        deadline = time.monotonic() + ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise AssertionError(f"the server exited ({self.returncode}) before it was "
                                     f"ready:\n{self.log_tail()}")
            try:
                r = http_request(self.port, "GET", "/health/ready", timeout=5)
                last = f"{r.status} {r.body[:200]!r}"
                if r.status == 200:
                    return self
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"/health/ready not 200 within {ready_timeout} s (last: {last}):\n"
                             f"{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rank0_pid(self) -> int:
        """The rank-0 kiln process: a descendant of mpirun running `serve` with
        OMPI_COMM_WORLD_RANK=0 in its environment."""
        if self._rank0 is None:
            self._rank0 = self.rank_pid(0)
        return self._rank0

    def rank_pid(self, rank: int) -> int:
        """The kiln process of world rank `rank` (see rank0_pid)."""
        assert self.proc is not None
        want = f"OMPI_COMM_WORLD_RANK={rank}".encode()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            parents: dict[int, int] = {}
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                    parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
            for pid in parents:
                p, hops = pid, 0
                while p in parents and p != self.proc.pid and hops < 16:
                    p, hops = parents[p], hops + 1
                if p != self.proc.pid or pid == self.proc.pid:
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"serve" in cmdline and want in environ:
                    return pid
            time.sleep(0.1)
        raise AssertionError(f"rank {rank} of the server not found among mpirun's descendants")

    def sigterm_rank0(self) -> None:
        os.kill(self.rank0_pid(), signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to rank 0; mpirun must exit 0 within `timeout` s (else the job is killed and
        this fails)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.sigterm_rank0()
            if self.wait_exit(timeout) is None:
                self.kill()
                raise AssertionError(f"mpirun did not exit within {timeout} s of SIGTERM to rank "
                                     f"0 (killed):\n{self.log_tail()}")
        self.returncode = self.proc.returncode
        if os.environ.get("KILN_HTTP_VERBOSE"):
            print(self.log_tail(200), file=sys.stderr)
        if self.returncode != 0:
            raise AssertionError(f"mpirun exited {self.returncode}, expected 0:\n"
                                 f"{self.log_tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_tail(self, n: int = 60) -> str:
        lines = self.log().splitlines()
        return f"--- {self.log_path} (last {n} lines) ---\n" + "\n".join(lines[-n:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.kill()

    # -- requests

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw) -> Reply:
        return http_request(self.port, "GET", path, **kw)

    def post(self, path: str, body: Any, **kw) -> Reply:
        return http_request(self.port, "POST", path, body, **kw)

    def metrics(self) -> dict[tuple[str, str], float]:
        r = self.get("/metrics")
        assert r.status == 200, f"/metrics: {r.status} {r.body[:300]!r}"
        return parse_metrics(r.body.decode())

    def metric(self, name: str, labels: str = "", m: dict | None = None) -> float:
        """kiln:NAME{labels} (0 when absent); labels as written, e.g. 'status="200"'."""
        m = self.metrics() if m is None else m
        return m.get(("kiln:" + name, "{" + labels + "}" if labels else ""), 0.0)

    def metric_sum(self, name: str, m: dict | None = None) -> float:
        m = self.metrics() if m is None else m
        return sum(v for (n, _), v in m.items() if n == "kiln:" + name)

    def wait_metrics(self, want: dict[str, float], timeout: float = 10) -> dict:
        """Polls /metrics until each NAME (or NAME{labels}) in `want` has its value; fails with
        every mismatch otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            bad = {}
            for key, value in want.items():
                name, _, labels = key.partition("{")
                got = self.metric(name, labels.rstrip("}"), m)
                if got != value:
                    bad[key] = got
            if not bad:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    "metrics after %.0f s: " % timeout +
                    ", ".join(f"{k} = {v:g} (want {want[k]:g})" for k, v in bad.items()))
            time.sleep(0.2)


class ServerTestCase(unittest.TestCase):
    """One server per test class: SETS (topology overrides) and ARGS (extra serve flags)."""

    SETS: dict[str, Any] = {}
    ARGS: list[str] = []
    server: KilnServer

    @classmethod
    def setUpClass(cls):
        cls.server = KilnServer(cls.SETS, cls.ARGS, tag=cls.__name__).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.kill()

    @property
    def port(self) -> int:
        return self.server.port


# ---------------------------------------------------------------------------------------------
# asyncio HTTP/1.1 client (one request per connection), with incremental SSE parsing


@dataclass
class StreamResult:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""            # the whole body as received (de-chunked)
    events: list[str] = field(default_factory=list)    # payloads of `data:` events, in order
    times: list[float] = field(default_factory=list)   # monotonic arrival time of each event
    comments: int = 0            # `:` lines (pings)
    done: bool = False           # `data: [DONE]` seen
    after_done: bytes = b""      # anything after [DONE] (must be empty)
    framing_errors: list[str] = field(default_factory=list)
    error: str | None = None     # transport problem (connection reset, timeout, ...)
    disconnected: bool = False   # we closed the connection on purpose
    t_start: float = 0.0
    t_head: float = 0.0          # monotonic time the status line arrived (0: it did not)
    t_end: float = 0.0           # monotonic time the exchange ended

    def json(self) -> Any:
        return json.loads(self.body)

    def chunks(self) -> list[dict]:
        """Every data event but [DONE], parsed."""
        return [json.loads(e) for e in self.events if e != "[DONE]"]

    def content_chunks(self) -> list[dict]:
        return [c for c in self.chunks() if c.get("choices")]



class StreamsStarted:
    """Waits for n streams to get going: `on_event(i)` is stream i's on_event callback, and
    `event` is set once n distinct streams have had a chunk with choices (a token), or any event
    at all with `any_event`. A stream is looked at only until it counts: its events are not
    parsed again as thousands more arrive."""

    def __init__(self, n: int, any_event: bool = False):
        self.n = n
        self.any_event = any_event
        self.seen: set[int] = set()
        self.event = asyncio.Event()

    def on_event(self, i: int):
        def f(res: StreamResult) -> None:
            if i in self.seen:
                return
            if res.events if self.any_event else res.content_chunks():
                self.seen.add(i)
                if len(self.seen) == self.n:
                    self.event.set()
        return f


class _SSE:
    def __init__(self, res: StreamResult):
        self.res = res
        self.buf = b""

    def feed(self, data: bytes, now: float) -> int:
        """Returns how many content events arrived."""
        res = self.res
        if res.done:
            res.after_done += data
            return 0
        self.buf += data
        n = 0
        while b"\n\n" in self.buf:
            block, self.buf = self.buf.split(b"\n\n", 1)
            payload = None
            for line in block.decode("utf-8", errors="strict").split("\n"):
                if line.startswith(":"):
                    res.comments += 1
                elif line.startswith("data: "):
                    if payload is not None:
                        res.framing_errors.append(f"two data lines in one event: {block!r}")
                    payload = line[len("data: "):]
                else:
                    res.framing_errors.append(f"line is neither 'data: ' nor a comment: {line!r}")
            if payload is None:
                continue
            if res.done:
                res.framing_errors.append(f"event after [DONE]: {payload!r}")
                continue
            res.events.append(payload)
            res.times.append(now)
            if payload == "[DONE]":
                res.done = True
                res.after_done += self.buf
                self.buf = b""
            else:
                try:
                    c = json.loads(payload)
                except ValueError:
                    res.framing_errors.append(f"data is not JSON: {payload[:200]!r}")
                    continue
                if isinstance(c, dict) and c.get("choices"):
                    n += 1
        return n


async def request(port: int, method: str, path: str, body: Any = None,
                  headers: dict | None = None, *, disconnect_after: int | None = None,
                  on_event=None, timeout: float = 120) -> StreamResult:
    """Sends one request (`Connection: close`) and reads the answer. For text/event-stream the
    events are parsed as they come; with disconnect_after=N the connection is closed (RST-free
    close) once N content chunks have arrived. on_event(result) is called after each read."""
    res = StreamResult(t_start=time.monotonic())
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Accept": "*/*"}
    if body is not None:
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(data))
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(head.encode() + b"\r\n" + data)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        if not m:
            res.error = f"bad status line {status_line!r}"
            return res
        res.status = int(m.group(1))
        res.t_head = time.monotonic()
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            res.headers[k.strip().lower()] = v.strip()
        sse = _SSE(res) if res.headers.get("content-type", "").startswith(
            "text/event-stream") else None
        content_events = 0

        async def consume(piece: bytes):
            nonlocal content_events
            res.body += piece
            if sse is not None:
                content_events += sse.feed(piece, time.monotonic())
                if on_event is not None:
                    on_event(res)

        if res.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await asyncio.wait_for(reader.readline(), timeout)
                if not size_line:
                    res.error = "connection closed inside the chunked body"
                    break
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await asyncio.wait_for(reader.readline(), timeout)  # trailer end
                    break
                piece = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                await consume(piece[:-2])
                if disconnect_after is not None and content_events >= disconnect_after:
                    res.disconnected = True
                    break
        elif "content-length" in res.headers:
            n = int(res.headers["content-length"])
            if n:
                await consume(await asyncio.wait_for(reader.readexactly(n), timeout))
        else:
            while True:
                piece = await asyncio.wait_for(reader.read(65536), timeout)
                if not piece:
                    break
                await consume(piece)
                if disconnect_after is not None and content_events >= disconnect_after:
                    res.disconnected = True
                    break
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
            UnicodeDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        res.t_end = time.monotonic()
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
    return res


def stream_summary(res: StreamResult) -> dict:
    """Checks the structure of a generation stream and returns per-choice texts.
    {"ok": bool, "problems": [...], "texts": {i: str}, "tokens": {i: n}, "finish": {i: reason},
     "usage": dict|None, "id": str|None, "error": dict|None}"""
    out: dict[str, Any] = {"problems": [], "texts": {}, "tokens": {}, "finish": {},
                           "usage": None, "id": None, "error": None}
    p = out["problems"]
    if res.error:
        p.append(f"transport: {res.error}")
    if res.status != 200:
        p.append(f"status {res.status}: {res.body[:300]!r}")
    p += res.framing_errors
    if not res.done:
        p.append("no data: [DONE]")
    if res.after_done.strip():
        p.append(f"bytes after [DONE]: {res.after_done[:200]!r}")
    ids = set()
    for c in res.chunks():
        if "error" in c:
            out["error"] = c["error"]
            continue
        ids.add(c.get("id"))
        if c.get("usage") and not c.get("choices"):
            out["usage"] = c["usage"]
            continue
        for ch in c.get("choices", []):
            i = ch["index"]
            if i in out["finish"]:
                p.append(f"choice {i}: chunk after its finish_reason")
            text = ch.get("text")
            if text is None:
                text = (ch.get("delta") or {}).get("content") or ""
            out["texts"][i] = out["texts"].get(i, "") + text
            out["tokens"][i] = out["tokens"].get(i, 0) + 1
            if ch.get("finish_reason") is not None:
                out["finish"][i] = ch["finish_reason"]
    if len(ids) > 1:
        p.append(f"several ids in one stream: {ids}")
    out["id"] = next(iter(ids)) if ids else None
    if out["error"] is None:
        for i in out["tokens"]:
            if i not in out["finish"]:
                p.append(f"choice {i}: no finish_reason")
    out["ok"] = not p
    return out


async def gather_limited(coros, limit: int | None = None):
    if limit is None:
        return await asyncio.gather(*coros)
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def completion_body(prompt: str, max_tokens: int, stream: bool = True, chat: bool = False,
                    **extra) -> dict:
    b: dict[str, Any] = {"model": MODEL_NAME, "max_tokens": max_tokens, "temperature": 0,
                         "ignore_eos": True, "stream": stream}
    if chat:
        b["messages"] = [{"role": "user", "content": prompt}]
    else:
        b["prompt"] = prompt
    if stream:
        b["stream_options"] = {"include_usage": True}
    b.update(extra)
    return b


def run_main():
    """unittest.main with verbose output; exit status 1 on any failure."""
    unittest.main(verbosity=2)
