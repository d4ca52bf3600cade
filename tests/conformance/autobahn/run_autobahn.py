"""Run Autobahn|Testsuite against powpow, both roles, and fail on any case that is not clean.

    python3 tests/conformance/autobahn/run_autobahn.py [--profile quick|full] [--python PY]
                                                       [--roles server,client] [--json OUT] [--keep DIR]

* server role: ``wstest -m fuzzingclient`` against ``tests/conformance/echo_server.py``;
* client role: ``wstest -m fuzzingserver`` with ``tests/conformance/fuzz_client.py`` as the client.

``--python`` is the interpreter that runs powpow (default: this one): the CI
runs it with each venv's python.  ``wstest`` comes from ``setup_wstest.sh``
(pyenv's Python 2.7); when it cannot be set up this script fails (exit 3),
it never skips.

Profiles: ``quick`` (CI, 311 cases) is cases 1-10 plus a compression sample:
12.1.1-2 and 12.2.1 (small messages, default offer), and the first case of
each 13.x offer (13.1 default, 13.2 client_no_context_takeover, 13.3-13.6
max window bits 8/15 with and without it, 13.7 a list of offers); compression
cases cost wstest (Python 2) seconds each.  ``full`` is all 517 cases.

Verdict: every case's ``behavior`` must be OK, NON-STRICT or INFORMATIONAL
and its ``behaviorClose`` OK or INFORMATIONAL, and both roles must report
the same number of cases; else exit 1 with one line per offending case.
Counts per role are printed (and written to ``--json``).
"""
import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFORMANCE = os.path.dirname(HERE)
GOOD = ("OK", "NON-STRICT", "INFORMATIONAL")
GOOD_CLOSE = ("OK", "INFORMATIONAL")

PROFILES = {
    # about 30 s per role on an idle core: 9.* (16 MiB messages) is the longest part
    "quick": {"cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*",
                        "12.1.1", "12.1.2", "12.2.1", "13.1.1", "13.2.1", "13.3.1", "13.4.1", "13.5.1",
                        "13.6.1", "13.7.1"],
              "timeout": 300},
    "full": {"cases": ["*"], "timeout": 1800},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("autobahn: process %s exited early (rc=%s)" % (proc.args, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("autobahn: nothing listens on port %d after %.0f s" % (port, timeout))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wstest_path() -> str:
    r = subprocess.run(["bash", os.path.join(HERE, "setup_wstest.sh")], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write("autobahn: setup_wstest.sh failed (rc=%d): wstest is required, not skipping\n"
                         % r.returncode)
        sys.exit(3)
    return r.stdout.strip().splitlines()[-1]


def summarize(index_path: str, role: str):
    """(counts, offending lines) of one report index."""
    with open(index_path) as f:
        index = json.load(f)
    counts: collections.Counter = collections.Counter()
    bad = []
    for agent, cases in index.items():
        for case, r in sorted(cases.items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
            counts[r["behavior"]] += 1
            if r["behavior"] not in GOOD or r["behaviorClose"] not in GOOD_CLOSE:
                bad.append("%s %s %s: behavior=%s close=%s (report %s)" % (
                    role, agent, case, r["behavior"], r["behaviorClose"], r.get("reportfile")))
    return counts, bad


def run_server_role(wstest, py, cases, timeout, work):
    port = free_port()
    spec = {"options": {"failByDrop": False}, "outdir": os.path.join(work, "servers"),
            "servers": [{"agent": "powpow", "url": "ws://127.0.0.1:%d" % port}],
            "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}
    spec_path = os.path.join(work, "fuzzingclient.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    log = open(os.path.join(work, "echo_server.log"), "w")
    server = subprocess.Popen([py, os.path.join(CONFORMANCE, "echo_server.py"), str(port)], stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_port(port, server)
        with open(os.path.join(work, "wstest_fuzzingclient.log"), "w") as wlog:
            subprocess.run([wstest, "-m", "fuzzingclient", "-s", spec_path], cwd=work, stdout=wlog,
                           stderr=subprocess.STDOUT, timeout=timeout, check=True)
    finally:
        stop(server)
        log.close()
    return os.path.join(work, "servers", "index.json")


def run_client_role(wstest, py, cases, timeout, work):
    port = free_port()
    spec = {"url": "ws://127.0.0.1:%d" % port, "options": {"failByDrop": False},
            "outdir": os.path.join(work, "clients"), "webport": 0,
            "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}
    spec_path = os.path.join(work, "fuzzingserver.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    wlog = open(os.path.join(work, "wstest_fuzzingserver.log"), "w")
    server = subprocess.Popen([wstest, "-m", "fuzzingserver", "-s", spec_path], cwd=work, stdout=wlog,
                              stderr=subprocess.STDOUT)
    try:
        wait_port(port, server, 60)
        with open(os.path.join(work, "fuzz_client.log"), "w") as clog:
            subprocess.run([py, os.path.join(CONFORMANCE, "fuzz_client.py"), "ws://127.0.0.1:%d" % port, "powpow"],
                           stdout=clog, stderr=subprocess.STDOUT, timeout=timeout, check=True)
        index = os.path.join(work, "clients", "index.json")
        end = time.monotonic() + 30  # /updateReports writes the index
        while not os.path.exists(index) and time.monotonic() < end:
            time.sleep(0.2)
    finally:
        stop(server)
        wlog.close()
    return index


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--python", default=sys.executable, help="interpreter running powpow")
    ap.add_argument("--roles", default="server,client")
    ap.add_argument("--cases", help="comma-separated case patterns instead of the profile's")
    ap.add_argument("--timeout", type=int, help="seconds per role instead of the profile's")
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--keep", help="keep reports and logs in this directory")
    args = ap.parse_args()
    prof = dict(PROFILES[args.profile])
    if args.cases:
        prof["cases"] = args.cases.split(",")
    if args.timeout:
        prof["timeout"] = args.timeout
    wstest = wstest_path()
    work = args.keep or tempfile.mkdtemp(prefix="powpow-autobahn-")
    os.makedirs(work, exist_ok=True)
    impl = subprocess.run([args.python, "-c", "import sys, powpow._ffi as f; print(sys.implementation.name, "
                           "sys.version.split()[0], 'native' if f.NATIVE else 'pure')"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    print("autobahn %s profile with %s (%s); work dir %s" % (args.profile, args.python, impl, work), flush=True)
    results = {}
    bad_all = []
    for role in args.roles.split(","):
        t0 = time.monotonic()
        runner = run_server_role if role == "server" else run_client_role
        try:
            index = runner(wstest, args.python, prof["cases"], prof["timeout"], work)
        except subprocess.TimeoutExpired:
            bad_all.append("%s: timed out after %d s" % (role, prof["timeout"]))
            continue
        except subprocess.CalledProcessError as exc:
            bad_all.append("%s: %s exited with %d (logs in %s)" % (role, exc.cmd[0], exc.returncode, work))
            continue
        if not os.path.exists(index):
            bad_all.append("%s: no report index (logs in %s)" % (role, work))
            continue
        counts, bad = summarize(index, role)
        bad_all.extend(bad)
        results[role] = dict(counts, cases=sum(counts.values()), seconds=round(time.monotonic() - t0, 1))
        print("  %s role: %s" % (role, json.dumps(results[role], sort_keys=True)), flush=True)
    totals = {r["cases"] for r in results.values()}
    if len(totals) > 1:
        bad_all.append("the roles ran different numbers of cases: %s" % results)
    if any(t == 0 for t in totals):
        bad_all.append("a role ran no case: %s" % results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "interpreter": impl, "results": results, "problems": bad_all},
                      f, indent=1, sort_keys=True)
    for line in bad_all:
        print("  NOT CLEAN:", line)
    if not args.keep and not bad_all:
        shutil.rmtree(work, ignore_errors=True)
    print("autobahn: %s" % ("FAILED" if bad_all else "clean"), flush=True)
    return 1 if bad_all else 0


if __name__ == "__main__":
    sys.exit(main())
