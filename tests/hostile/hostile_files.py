#!/usr/bin/env python3
"""Hostile input files against the kiln command line.

Builds the micro model (`kiln make-model --preset micro`: an HF directory and a GGUF file), then
defective variants of every kind of file kiln reads — GGUF and safetensors fields (sizes, counts,
offsets, dtypes, strings, huge values), the safetensors index, config.json values, tokenizer files,
special files (FIFO, directory, /dev/zero, dangling or looping symlinks, oversized files) in the
place of any of them, topology files, API key and token files, and topology keys that size the
cache — and runs `kiln inspect`, `eval`, `generate` or `serve` on each (the commands that read
that file). Every run must exit non-zero, not by a signal, within the time limit, with exactly one
stderr line starting `kiln: error:` that names what was wrong (the case's `expect` text), and no
`check failed`, `terminate`, `Sanitizer` or abort text. Unmodified files (controls) must pass.

The format-level defect corpus of the parsers themselves lives in kiln_shard_tests (GgufDefects,
SafetensorsDefects) and the fuzz corpora; here each field class is driven end to end through
the CLI, one representative case per class, plus what only a whole command can show (special
files, memory planning, tokenizer files, the index).

Usage: hostile_files.py --kiln BUILD/launcher/kiln --work DIR [--jobs N] [--only SUBSTR]
Prints a table (class, cases, result) and exits 1 if any case failed.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases_files  # noqa: E402

TIME_LIMIT_S = 20.0
BAD_TEXT = re.compile(r"check failed|terminate called|terminate|Sanitizer|Aborted|core dumped|"
                      r"Segmentation fault|MPI_ABORT", re.IGNORECASE)


def command_line(kiln, command, model, extra):
    base = {
        "inspect": [kiln, "inspect", "--model", model],
        "eval": [kiln, "eval", "--model", model, "--tokens", "1,2,3", "--threads", "1"],
        "generate": [kiln, "generate", "--model", model, "--prompt", "Hi", "--max-tokens", "2",
                     "--threads", "1"],
        "serve": [kiln, "serve", "--model", model, "--port", "0", "--threads", "1",
                  "--log-level", "warn"],
    }[command]
    more = list(extra.get(command, extra.get("*", [])))
    if "--tokens-file" in more or "--tokens" in more:  # instead of --tokens 1,2,3
        base = base[:4] + base[6:]
    return base + more


def judge(case, proc_rc, stderr, elapsed, expect_ok):
    """'' when the run behaved, else why not."""
    if proc_rc is None:
        return f"no exit within {TIME_LIMIT_S:.0f} s"
    if proc_rc < 0:
        return f"killed by signal {-proc_rc}"
    bad = BAD_TEXT.search(stderr)
    if bad:
        return f"stderr has '{bad.group(0)}'"
    if expect_ok:
        return "" if proc_rc == 0 else f"exit {proc_rc} on a valid model: {stderr.strip()[-300:]}"
    if proc_rc == 0:
        return "exit 0 (accepted)"
    errors = [l for l in stderr.splitlines() if l.startswith("kiln: error:")]
    if len(errors) != 1:
        return f"{len(errors)} 'kiln: error:' lines: {stderr.strip()[-300:]!r}"
    if not re.search(case.expect, errors[0], re.IGNORECASE):
        return f"error does not name /{case.expect}/: {errors[0]}"
    if elapsed > TIME_LIMIT_S:
        return f"took {elapsed:.1f} s"
    return ""


def run_one(kiln, case, command):
    argv = command_line(kiln, command, case.model, case.extra)
    env = dict(os.environ, OMPI_MCA_btl="self,vader", OMPI_MCA_pml="ob1")
    start = time.monotonic()
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=TIME_LIMIT_S, env=env, cwd=case.cwd)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        rc, err = None, (e.stderr or b"").decode(errors="replace")
    elapsed = time.monotonic() - start
    why = judge(case, rc, err, elapsed, case.expect_ok)
    first = next((l for l in err.splitlines() if l.startswith("kiln: error:")), "")
    return case, command, why, elapsed, first


def make_base(kiln, work):
    base = os.path.join(work, "base")
    if os.path.exists(base):
        shutil.rmtree(base)
    subprocess.run([kiln, "make-model", "--preset", "micro", "--seed", "3", "--out", base],
                   check=True, stdout=subprocess.DEVNULL)
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 2))
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--verbose", action="store_true", help="print every run's error line")
    a = ap.parse_args()
    kiln = os.path.abspath(a.kiln)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    base = make_base(kiln, work)
    cases_dir = os.path.join(work, "cases")
    if os.path.exists(cases_dir):
        shutil.rmtree(cases_dir)
    cases = [c for c in cases_files.build_all(base, cases_dir) if a.only in c.name]
    runs = [(c, cmd) for c in cases for cmd in c.commands]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(lambda r: run_one(kiln, *r), runs))

    by_class = {}
    failures = []
    for case, command, why, elapsed, first in results:
        row = by_class.setdefault((case.group, case.cls), [set(), 0, 0])
        row[0].add(case.name)
        row[1] += 1
        if why:
            row[2] += 1
            failures.append((case, command, why))
        if a.verbose:
            print(f"  {case.name:<40} {command:<8} {elapsed:5.2f}s {why or 'ok'} | {first}")
    print(f"\n{'group':<14} {'class':<22} {'cases':>5} {'runs':>5}  result")
    for (group, cls), (names, n_runs, n_fail) in sorted(by_class.items()):
        result = "ok" if n_fail == 0 else f"{n_fail} failed"
        print(f"{group:<14} {cls:<22} {len(names):>5} {n_runs:>5}  {result}")
    slowest = max(results, key=lambda r: r[3])
    print(f"\n{len(cases)} cases, {len(runs)} runs in {time.monotonic() - start:.1f} s "
          f"(slowest run {slowest[3]:.1f} s: {slowest[0].name} / {slowest[1]})")
    for case, command, why in failures:
        print(f"FAIL {case.name} [{command}]: {why}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
