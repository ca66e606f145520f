"""Summarizes a `tempest run` output (stdout): failures with their exception line, skips
grouped by reason, totals. Usage: python3 summarize.py tempest.out [tests.list]

With the list of the tests selected (`tempest run --list-tests`), the totals also count
each test of a class whose setUpClass failed or was skipped, as tempest reports such a
class once."""
import collections
import re
import sys

RESULT = re.compile(r"^\{\d+\} (.+?)(?: \[[\d.]+s\])? \.\.\. (ok|FAILED|SKIPPED)(?:: (.*))?$")
lines = open(sys.argv[1], errors="replace").read().splitlines()
tests, current = [], None
for line in lines:
    m = RESULT.match(line)
    if m:
        current = {"name": m.group(1), "result": m.group(2), "reason": m.group(3) or "",
                   "lines": []}
        tests.append(current)
    elif current is not None:
        current["lines"].append(line)


def short(name):
    name = re.sub(r"\[id-[0-9a-f-]+[^\]]*\]", "", name)
    return name.replace("tempest.api.volume.", "")


def cause(t):
    """The exception line of the first traceback, else the first non-blank line."""
    body = [line.strip() for line in t["lines"]]
    for i, line in enumerate(body):
        if re.match(r"^[\w.]+(Error|Exception|Failure|NotFound|BadRequest|Conflict|Forbidden|"
                    r"Unauthorized|ServerFault|Invalid\w*|TimeoutException|OverLimit|"
                    r"UnexpectedResponseCode|\w+Exception|\w+Error):", line):
            out = line
            # tempest's REST errors put the body on the next lines
            for extra in body[i + 1:i + 4]:
                if extra.startswith("Details:") or extra.startswith("Response"):
                    out += " " + extra
            return out[:400]
    return next((line for line in body if line), "")[:400]


listed = []
if len(sys.argv) > 2:
    listed = [re.sub(r"\[.*\]$", "", line.strip()) for line in open(sys.argv[2])
              if line.startswith("tempest.")]


def weight(t):
    """How many listed tests a result stands for (a class's setUpClass: all of its)."""
    m = re.match(r"^setUpClass \((.+)\)$", t["name"])
    if not m or not listed:
        return 1
    return sum(1 for n in listed if n.rsplit(".", 1)[0] == m.group(1)) or 1


def label(t):
    n = weight(t)
    return short(t["name"]) + (" (%d tests)" % n if t["name"].startswith("setUpClass") else "")


counts = collections.Counter(t["result"] for t in tests)
failed = [t for t in tests if t["result"] == "FAILED"]
skipped = [t for t in tests if t["result"] == "SKIPPED"]
print("FAILURES (%d, in tests)" % sum(map(weight, failed)))
for t in failed:
    print("  %s\n      %s" % (label(t), cause(t)))
print("\nSKIPS by reason (%d, in tests)" % sum(map(weight, skipped)))
by = collections.defaultdict(list)
for t in skipped:
    by[t["reason"]].append(t)
for reason, ts in sorted(by.items(), key=lambda kv: -sum(map(weight, kv[1]))):
    print("  %3d  %s" % (sum(map(weight, ts)), reason))
    for t in ts:
        print("         %s" % label(t))
print("\ntempest's count: passed %d, failed %d, skipped %d"
      % (counts["ok"], counts["FAILED"], counts["SKIPPED"]))
if listed:
    done = {re.sub(r"\[.*\]$", "", t["name"]): t["result"] for t in tests}
    classes = {}
    for t in tests:
        m = re.match(r"^setUpClass \((.+)\)$", t["name"])
        if m:
            classes[m.group(1)] = t["result"]
    per_test = collections.Counter()
    for name in listed:
        result = done.get(name) or classes.get(name.rsplit(".", 1)[0]) or "not run"
        per_test[result] += 1
    print("per test (%d listed): passed %d, failed %d, skipped %d, not run %d"
          % (len(listed), per_test["ok"], per_test["FAILED"], per_test["SKIPPED"],
             per_test["not run"]))
