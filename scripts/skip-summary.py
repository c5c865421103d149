#!/usr/bin/env python3
"""Lists every skip of a CI run with its reason and fails on one the machine does not explain.

  skip-summary.py --table tests/expected-skips --fact no-gpu --fact netns ...
                  [--ctest BUILD_DIR JUNIT_XML]... [--emu LOG]... [--stage NAME REASON]...

--ctest: a ctest run (its --output-junit file; labels come from `ctest --show-only=json-v1` in
BUILD_DIR). --emu: the output of an emulator run (gtest's own report). --stage: a stage the CI
script did not run. A skip is allowed when a row of the table whose fact is among --fact matches
its kind, its whole name and its reason (see tests/expected-skips). Exit status: 0 when every skip
is allowed, 1 otherwise, 2 on bad input.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


@dataclass
class Skip:
    kind_of: set  # the kinds this skip answers to: {"test", "gpu"}, {"emu"} or {"stage"}
    where: str
    name: str
    reason: str
    allowed_by: str = ""


@dataclass
class Row:
    fact: str
    kind: str
    name: re.Pattern
    reason: re.Pattern
    line: int = 0
    used: list = field(default_factory=list)


def read_table(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split(None, 3)
            if len(parts) != 4:
                sys.exit(f"skip-summary: {path}:{number}: want 'fact kind name reason', got: {text}")
            fact, kind, name, reason = parts
            if kind not in ("gpu", "test", "emu", "stage"):
                sys.exit(f"skip-summary: {path}:{number}: unknown kind '{kind}'")
            rows.append(Row(fact, kind, re.compile(name), re.compile(reason), number))
    return rows


GTEST_SKIPPED = re.compile(r"^\[  SKIPPED \] (\S+) \(\d+ ms\)$")
GTEST_RUN = re.compile(r"^\[ RUN      \] (\S+)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # gtest colours its report on a pty (mpirun)


def gtest_skips(output):
    """{test name: reason} for every test gtest reported as skipped in `output`."""
    found, current, message, in_message = {}, None, [], False
    for line in ANSI_ESCAPE.sub("", output).splitlines():
        run = GTEST_RUN.match(line)
        if run:
            current, message, in_message = run.group(1), [], False
            continue
        skipped = GTEST_SKIPPED.match(line)
        if skipped:
            found[skipped.group(1)] = " ".join(m for m in message if m) or "(no message)"
            current, in_message = None, False
            continue
        if current and line.endswith(": Skipped"):
            in_message = True
        elif in_message:
            message.append(line.strip())
    return found


def script_reason(output):
    """The reason a script or a job gave: its SKIP line, else its last line."""
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", output).splitlines() if line.strip()]
    for line in lines:
        m = re.search(r"\bSKIP(?:PED)?:\s*(.*)", line)
        if m:
            return m.group(1)
    return lines[-1] if lines else "(no output)"


def ctest_labels(build_dir):
    shown = subprocess.run(["ctest", "--test-dir", build_dir, "--show-only=json-v1"],
                           check=True, capture_output=True, text=True).stdout
    labels = {}
    for test in json.loads(shown).get("tests", []):
        for prop in test.get("properties", []):
            if prop.get("name") == "LABELS":
                labels[test["name"]] = set(prop.get("value", []))
    return labels


def ctest_skips(build_dir, junit):
    labels = ctest_labels(build_dir)
    skips = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.get("status") != "notrun" or case.find("skipped") is None:
            continue
        name = case.get("name")
        out = case.findtext("system-out") or ""
        reasons = gtest_skips(out)
        reason = " ".join(reasons.values()) if reasons else script_reason(out)
        kinds = {"test"} | ({"gpu"} if "gpu" in labels.get(name, set()) else set())
        where = build_dir + " [" + ",".join(sorted(labels.get(name, set()))) + "]"
        skips.append(Skip(kinds, where, name, reason))
    return skips


def emu_skips(log):
    with open(log, encoding="utf-8", errors="replace") as f:
        found = gtest_skips(f.read())
    return [Skip({"emu"}, "emulator", name, reason) for name, reason in found.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--fact", action="append", default=[])
    parser.add_argument("--ctest", nargs=2, action="append", default=[],
                        metavar=("BUILD_DIR", "JUNIT_XML"))
    parser.add_argument("--emu", action="append", default=[])
    parser.add_argument("--stage", nargs=2, action="append", default=[],
                        metavar=("NAME", "REASON"))
    args = parser.parse_args()
    facts = set(args.fact) | {"any"}
    rows = read_table(args.table)

    skips = []
    for build_dir, junit in args.ctest:
        if os.path.exists(junit):
            skips += ctest_skips(build_dir, junit)
        else:
            print(f"skip-summary: no results from {build_dir} ({junit} absent: the stage did not end)")
    for log in args.emu:
        if os.path.exists(log):
            skips += emu_skips(log)
        else:
            print(f"skip-summary: no emulator results ({log} absent)")
    skips += [Skip({"stage"}, "scripts/test.sh", name, reason) for name, reason in args.stage]

    refused = []
    for skip in skips:
        for row in rows:
            if (row.fact in facts and row.kind in skip.kind_of and row.name.fullmatch(skip.name)
                    and row.reason.search(skip.reason)):
                skip.allowed_by = f"{row.fact} ({args.table}:{row.line})"
                break
        else:
            refused.append(skip)

    print(f"== skipped: {len(skips)} (machine: {', '.join(sorted(args.fact)) or 'no facts'}) ==")
    # Allowed skips grouped by where, reason and the row that allows them; refused ones one by one.
    groups = {}
    for skip in skips:
        if skip.allowed_by:
            groups.setdefault((skip.where, skip.reason, skip.allowed_by), []).append(skip.name)
    for (where, reason, allowed_by), names in groups.items():
        print(f"  {len(names)} in [{where}], allowed: {allowed_by}\n      reason: {reason}")
        print(textwrap.fill(" ".join(names), width=100, initial_indent="      ",
                            subsequent_indent="      ", break_on_hyphens=False))
    for skip in refused:
        print(f"  {skip.name}  [{skip.where}]\n      reason: {skip.reason}\n      NOT EXPECTED HERE")
    if refused:
        print(f"skip-summary: FAIL: {len(refused)} skip(s) this machine does not explain: "
              f"{', '.join(s.name for s in refused)}. A test may skip only for a reason listed in "
              f"{args.table} for a fact of this machine; make it run, or fail.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
