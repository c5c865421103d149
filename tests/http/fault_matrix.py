"""Fault injection under mpirun: a TP-2 `kiln serve` on the micro model, streams open, then one
fault — SIGSTOP or SIGKILL of rank 0 or rank 1 during prefill, decode or idle; SIGTERM to rank 0,
rank 1, mpirun or `kiln launch` during decode. For each case it checks that

* every open stream ends: it finishes, or gets an error event and `data: [DONE]` (a request
  refused with 503 or a refused connection is an answer too); only when rank 0 itself is stopped
  or killed (it owns the sockets) may a stream end with the connection closed mid-body instead —
  never by hanging;
* after SIGSTOP, a client sees the failure within step_timeout_s + 2 s of the fault (the idle
  cases open their streams only step_timeout_s / 2 after it);
* the job exits within scheduler.step_timeout_s + 5 s of the fault (a drain: drain_timeout_s +
  5 s), non-zero after a failure, 0 after a drain asked of a rank or of `kiln launch`;
* after a SIGTERM, /health never answers 200 again once it has answered otherwise, and it has
  answered otherwise before the first client error;

and measures the time from the fault to the first client error and to the job's exit.

  python3 tests/http/fault_matrix.py                 # every case (about 5 minutes)
  python3 tests/http/fault_matrix.py --cases ci      # the subset ctest runs (http.fault_matrix)
  python3 tests/http/fault_matrix.py --cases stop-r0-decode,term-mpirun-decode --step-timeout 5

Environment as kiln_server.py (KILN_BIN, KILN_MPIEXEC, KILN_HTTP_WORK). Exit status 1 when a case
fails; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import kiln_server as ks

STOP, KILL, TERM = signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM
PROMPT_WORDS = 1500   # prefill cases: a prompt long enough to be mid-prefill at the fault
PREFILL_CHUNK = 8     # ... cut in small chunks, one per step
DRAIN_S = 3
# A stopped rank is noticed by rank 0 within step_timeout_s (+ one heartbeat interval while
# idle), a stopped rank 0 by the others within step_timeout_s + 1 s: a client must see the
# failure within step_timeout_s + this.
DETECT_SLACK_S = 2.0


@dataclass
class Case:
    name: str
    target: str   # rank0 | rank1 | mpirun | launch
    sig: int
    phase: str    # prefill | decode | idle

    @property
    def drain(self) -> bool:  # a request to drain, not a failure
        return self.sig == TERM and self.target in ("rank0", "rank1", "launch")

    @property
    def log_line(self) -> str | None:
        """What the job's log must say about this fault."""
        if self.sig == STOP:
            return "rank 0 is silent" if self.target == "rank0" else "ending every request"
        if self.target == "mpirun":
            return "SIGTERM from mpirun): draining"
        if self.target == "rank1" and self.sig == TERM:
            return "told in a heartbeat answer): draining"
        return None

    @property
    def rank0_gone(self) -> bool:  # rank 0 cannot write to its sockets any more
        return self.target == "rank0" and self.sig in (STOP, KILL)


CASES = [Case(f"{s}-r{r}-{p}", f"rank{r}", sig, p)
         for s, sig in (("stop", STOP), ("kill", KILL))
         for r in (0, 1) for p in ("prefill", "decode", "idle")]
CASES += [Case("term-r0-decode", "rank0", TERM, "decode"),
          Case("term-r1-decode", "rank1", TERM, "decode"),
          Case("term-mpirun-decode", "mpirun", TERM, "decode"),
          Case("term-launch-decode", "launch", TERM, "decode")]
CI_CASES = ["stop-r0-decode", "stop-r1-idle", "term-mpirun-decode"]


@dataclass
class Outcome:
    case: Case
    first_error_s: float | None = None
    exit_s: float | None = None
    health_down_s: float | None = None  # SIGTERM cases: when /health first answered non-200
    step_timeout: float = 5.0
    rc: int | None = None
    streams: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    log_tail: str = ""


class LaunchServer(ks.KilnServer):
    """`kiln launch TOPOLOGY` (TP 2 on this host, one thread per rank) instead of plain mpirun."""

    def _start(self, ready_timeout: float):
        self.port = ks.free_port()
        topo = ks.work_dir() / f"fault-launch-{self.port}.yaml"
        topo.write_text(
            f"model:\n  path: {ks.micro_model()}\n  name: {ks.MODEL_NAME}\nbackend: cpu\n"
            "threads: 1\nparallel:\n  tensor: 2\n  pipeline: 1\n"
            "nodes:\n  - host: localhost\n    slots: 2\n"
            f"server:\n  host: 127.0.0.1\n  port: {self.port}\n")
        sets = [a for k, v in self.sets.items() for a in ("--set", f"{k}={v}")]
        return self._spawn([ks.KILN_BIN, "launch", str(topo), *sets, "--", "--oversubscribe"],
                           ready_timeout)


def stream_outcome(r: ks.StreamResult) -> str:
    if r.status == 0:
        return "refused" if r.error and "onnect" in r.error else "reset"
    if r.status != 200:
        return f"http {r.status}"
    if r.done:
        last = json.loads(r.events[-2]) if len(r.events) >= 2 else {}
        return "error+DONE" if "error" in last else "finished"
    return "reset"


def error_time(r: ks.StreamResult) -> float | None:
    """When this client first learnt of the failure: an error event, or the connection ending
    without [DONE]."""
    for payload, t in zip(r.events, r.times):
        if payload != "[DONE]" and "error" in json.loads(payload):
            return t
    return None if r.done else r.t_end


async def open_streams(port: int, n: int, prompt_words: int, max_tokens: int):
    """n streaming completions; returns (tasks, an Event set once each has had a token)."""
    prompt = " ".join(["word"] * prompt_words) if prompt_words else "Story"
    started = ks.StreamsStarted(n)

    async def one(i):
        r = await ks.request(port, "POST", "/v1/completions",
                             ks.completion_body(f"{prompt} {i}", max_tokens),
                             on_event=started.on_event(i), timeout=60)
        r.t_end = time.monotonic()
        return r

    return [asyncio.create_task(one(i)) for i in range(n)], started.event


def send_fault(server: ks.KilnServer, case: Case) -> None:
    if case.target in ("rank0", "rank1"):
        os.kill(server.rank_pid(int(case.target[-1])), case.sig)
    else:  # mpirun or kiln launch: the process the fixture started
        os.kill(server.proc.pid, case.sig)


def run_case(case: Case, step_timeout: float) -> Outcome:
    out = Outcome(case, step_timeout=step_timeout)
    sets = {"scheduler.step_timeout_s": step_timeout, "scheduler.drain_timeout_s": DRAIN_S}
    if case.phase == "prefill":
        sets["scheduler.prefill_chunk"] = PREFILL_CHUNK
    cls = LaunchServer if case.target == "launch" else ks.KilnServer
    server = cls(sets, tag=f"fault-{case.name}")
    server.start()
    for r in (0, 1):
        server.rank_pid(r)  # found now: a stopped or dead job is harder to search
    try:
        asyncio.run(_drive(server, case, out, (DRAIN_S if case.drain else step_timeout) + 5))
    finally:
        out.log_tail = server.log_tail(40)
        server.kill()
    if case.log_line and case.log_line not in server.log():
        out.problems.append(f"the log does not say '{case.log_line}'")
    return out


async def _drive(server: ks.KilnServer, case: Case, out: Outcome, bound: float) -> None:
    loop = asyncio.get_running_loop()
    pids = {r: server.rank_pid(r) for r in (0, 1)}
    streams = []
    if case.phase == "decode":
        streams, started = await open_streams(server.port, 4, 0, 3000)
        await asyncio.wait_for(started.wait(), 30)
    elif case.phase == "prefill":
        streams, _ = await open_streams(server.port, 2, PROMPT_WORDS, 64)
        await asyncio.sleep(0.15)
    t_fault = time.monotonic()
    await loop.run_in_executor(None, send_fault, server, case)

    def wait_exit():
        rc = server.wait_exit(bound + 10)
        return rc, time.monotonic()

    exit_future = loop.run_in_executor(None, wait_exit)
    health: list[tuple[float, str]] = []
    poller = asyncio.create_task(_poll_health(server.port, health)) if case.sig == TERM else None
    if case.phase == "idle":
        # SIGSTOP: late enough that a step of theirs would be caught after the bound below, so
        # only the heartbeat (for rank 0, the others' silence limit) catches the fault in time.
        # SIGKILL: at once (mpirun ends the job within about 2 s).
        await asyncio.sleep(out.step_timeout / 2 if case.sig == STOP else 0.3)
        streams, _ = await open_streams(server.port, 2, 0, 64)
    done, pending = await asyncio.wait(streams, timeout=bound + 10)
    for s in pending:
        s.cancel()
        out.streams.append("open")
        out.problems.append(f"a stream was still open {bound + 10:.0f} s after the fault")
    results = [s.result() for s in done]
    if case.phase == "prefill" and any(r.times and r.times[0] < t_fault for r in results):
        out.problems.append("the fault came after the first token (not during prefill)")
    allowed = {"finished", "error+DONE", "http 503", "refused"}  # a refusal is an answer
    if case.rank0_gone:
        allowed |= {"reset", "refused"}
    for r in results:
        o = stream_outcome(r)
        out.streams.append(o)
        if o not in allowed:
            out.problems.append(f"a stream ended '{o}': {r.error or ''} {r.body[-160:]!r}")
        t = error_time(r)
        if t is not None:
            t -= t_fault
            out.first_error_s = t if out.first_error_s is None else min(out.first_error_s, t)
    if poller is not None:
        poller.cancel()
        _check_health(health, out, t_fault)
    if case.sig == STOP and (out.first_error_s is None or
                             out.first_error_s > out.step_timeout + DETECT_SLACK_S):
        out.problems.append(f"no client saw the failure within step_timeout_s + "
                            f"{DETECT_SLACK_S:g} s of the fault")
    rc, t_exit = await exit_future
    out.rc = rc
    for pid in pids.values():  # a stopped rank must not outlive the job
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    if rc is None:
        out.problems.append(f"the job was still running {bound + 10:.0f} s after the fault")
        return
    out.exit_s = t_exit - t_fault
    if out.exit_s > bound:
        out.problems.append(f"the job exited {out.exit_s:.1f} s after the fault (bound {bound} s)")
    if case.drain and rc != 0:
        out.problems.append(f"exit code {rc} after a drain (want 0)")
    if not case.drain and case.target != "mpirun" and rc == 0:
        out.problems.append("exit code 0 after a failure")


async def _poll_health(port: int, into: list[tuple[float, str]]) -> None:
    while True:
        r = await ks.request(port, "GET", "/health", timeout=2)
        into.append((time.monotonic(), str(r.status) if r.status else "refused"))
        await asyncio.sleep(0.05)


def _check_health(health: list[tuple[float, str]], out: Outcome, t_fault: float) -> None:
    """Once /health has stopped answering 200 it must not again, and it must have stopped
    before the first client error."""
    first_down = next((t for t, h in health if h != "200"), None)
    if first_down is None:
        out.problems.append(f"/health answered 200 until the end ({len(health)} polls)")
        return
    if any(h == "200" for t, h in health if t > first_down):
        out.problems.append("/health answered 200 again after it had answered otherwise")
    if out.first_error_s is not None and first_down - t_fault > out.first_error_s + 0.1:
        out.problems.append(f"/health still 200 {first_down - t_fault:.2f} s after the fault, "
                            f"after the first client error ({out.first_error_s:.2f} s)")
    out.health_down_s = first_down - t_fault


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summarize(streams: list[str]) -> str:
    counts: dict[str, int] = {}
    for s in streams:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n}x {k}" for k, n in counts.items()) or "no streams"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="all", help="all, ci, or names separated by commas")
    ap.add_argument("--step-timeout", type=float, default=5.0,
                    help="scheduler.step_timeout_s of the servers (default 5)")
    args = ap.parse_args()
    names = {c.name: c for c in CASES}
    wanted = list(names) if args.cases == "all" else \
        CI_CASES if args.cases == "ci" else args.cases.split(",")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {', '.join(names)}")
    outcomes = []
    for name in wanted:
        t0 = time.monotonic()
        try:
            o = run_case(names[name], args.step_timeout)
        except AssertionError as e:
            o = Outcome(names[name], problems=[f"set-up failed: {e}"])
        outcomes.append(o)
        verdict = "ok" if not o.problems else "FAIL"
        print(f"{name}: {verdict} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        for p in o.problems:
            print(f"  {p}", file=sys.stderr)
        if o.problems:
            print(o.log_tail, file=sys.stderr)
    print(f"\nscheduler.step_timeout_s = {args.step_timeout:g}, drain_timeout_s = {DRAIN_S}; "
          "times in seconds from the fault")
    print(f"| {'fault':<20} | /health not 200 | first client error | job exit | exit code | "
          "streams | result |")
    print("|---|---|---|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.case.name:<20} | {fmt_s(o.health_down_s)} | {fmt_s(o.first_error_s)} | "
              f"{fmt_s(o.exit_s)} | {o.rc} | {summarize(o.streams)} | "
              f"{'ok' if not o.problems else 'FAIL'} |")
    return 1 if any(o.problems for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
