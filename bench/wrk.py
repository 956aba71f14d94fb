"""The HTTP/1.1 load: wrk (a C benchmark client, Lua-scriptable) posting client_credentials
grants to `POST /oauth/token` over keep-alive connections.

Honest traffic: the Lua script (written by `write_script`) holds one pre-formatted request per
OAuth client (HTTP Basic `client_id:client_secret`, form body `grant_type=client_credentials`),
and each wrk thread cycles through all of them from its own offset, so consecutive requests come
from different clients (a thousand or more, seeded into the store), not one request repeated.

Correctness: the script's `response()` counts every answer that is not a 200 carrying an
`access_token`, by status; `done()` adds the threads' counts up and prints one line of JSON
(`WRK_RESULT {...}`: requests, duration, socket errors, bad answers, latency percentiles) that
`parse_result` reads. A row fails on any bad answer or socket error. Against Tollgate the server's
`tollgate_token_requests_total{endpoint="token",status}` (scraped for every worker, `/metrics?worker=N`)
is the cross-check: its 200s must move by at least wrk's completed requests and at most that plus
the connections (wrk stops with one request in flight per connection, which the server may still
answer), and no other status may move.

    python -m bench.wrk --ensure      # installs wrk (apt-get, as root) when it is missing
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

from .tools import ToolMissing, ensure_tool

PACKAGE = "wrk"  # Debian/Ubuntu package
TOKEN_PATH = "/oauth/token"
GRANT_BODY = "grant_type=client_credentials"
RESULT_PREFIX = "WRK_RESULT "
WrkMissing = ToolMissing


def ensure_wrk(say: Callable[[str], None]) -> str:
    """The path of wrk; installs Debian's wrk with apt-get when it is not on PATH (as root, or
    through a password-less sudo). Raises WrkMissing saying what to do otherwise."""
    how = (f"install wrk yourself (Debian/Ubuntu: `sudo apt-get install {PACKAGE}`; Fedora: `sudo dnf install "
           "wrk`; macOS: `brew install wrk`) and run again, or leave the token rows out (`--parts` without "
           "`tokens`)")
    return ensure_tool("wrk", PACKAGE, how, say)


def basic_authorization(client_id: str, secret: str) -> str:
    """RFC 6749 section 2.3.1: id and secret form-encoded, joined by a colon, base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


# -- the Lua script -----------------------------------------------------------------------------

_SCRIPT = r"""-- Written by bench/wrk.py: client_credentials grants of %(count)d distinct OAuth clients.
local authorizations = {
%(authorizations)s
}
local threads = {}

function setup(thread)
   -- Each thread starts at its own place in the list (set as a global of the thread's state).
   thread:set("offset", #threads * %(stride)d)
   table.insert(threads, thread)
end

function init(args)
   prepared = {}
   for i, authorization in ipairs(authorizations) do
      prepared[i] = wrk.format("POST", "%(path)s", {
         ["Authorization"] = authorization,
         ["Content-Type"] = "application/x-www-form-urlencoded",
      }, "%(body)s")
   end
   position = offset %% #prepared
   bad = 0
   statuses = {}
end

function request()
   position = position %% #prepared + 1
   return prepared[position]
end

function response(status, headers, body)
   if status ~= 200 or not string.find(body, '"access_token"', 1, true) then
      bad = bad + 1
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
end

function done(summary, latency, requests)
   local bad_total = 0
   local by_status = {}
   for _, thread in ipairs(threads) do
      bad_total = bad_total + (thread:get("bad") or 0)
      for status, count in pairs(thread:get("statuses") or {}) do
         by_status[status] = (by_status[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(by_status) do
      table.insert(parts, string.format('"%%s":%%d', status, count))
   end
   local e = summary.errors
   io.write(string.format(
      '%(prefix)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
      '"status":%%d,"timeout":%%d,"bad":%%d,"bad_statuses":{%%s},"p50":%%d,"p90":%%d,"p99":%%d,' ..
      '"p999":%%d,"max":%%d,"mean":%%.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      bad_total, table.concat(parts, ","), latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""


def write_script(path: Path, authorizations: Sequence[str]) -> Path:
    """The Lua script cycling over `authorizations` (Authorization header values)."""
    if not authorizations:
        raise ValueError("at least one client")
    if any('"' in a or "\\" in a or "\n" in a for a in authorizations):
        raise ValueError("an Authorization value that needs quoting")
    lines = ",\n".join(f'   "{a}"' for a in authorizations)
    # Threads start a prime stride apart, so they do not send the same client at the same moment.
    stride = 7919 % len(authorizations) or 1
    path.write_text(_SCRIPT % {"count": len(authorizations), "authorizations": lines, "stride": stride,
                               "path": TOKEN_PATH, "body": GRANT_BODY, "prefix": RESULT_PREFIX})
    return path


# -- running wrk --------------------------------------------------------------------------------

@dataclass
class WrkResult:
    """What one wrk run reported (latencies in µs), and its own CPU."""

    requests: int = 0
    seconds: float = 0.0
    bytes: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout
    non_2xx: int = 0  # wrk's own count of statuses above 399 (its "Non-2xx or 3xx responses")
    bad: int = 0  # answers the script refused: not 200, or no access_token
    bad_statuses: dict[str, int] = field(default_factory=dict)
    latency_us: dict[str, float] = field(default_factory=dict)  # p50, p90, p99, p999, max, mean
    cpu: float = 0.0  # user + system CPU seconds of the wrk process
    returncode: int | None = None
    output: str = field(default="", repr=False)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def good(self) -> int:
        return self.requests - self.bad

    def percentile(self, name: str) -> float | None:
        """Seconds (p50, p99 …), None when wrk reported none."""
        value = self.latency_us.get(name)
        return value / 1e6 if value is not None and math.isfinite(value) else None

    def problems(self) -> list[str]:
        found = []
        if self.returncode != 0 or not self.seconds:
            tail = " / ".join(self.output.strip().splitlines()[-3:])
            found.append(f"wrk exited {self.returncode}: {tail}")
        if self.bad:
            statuses = ", ".join(f"{status}: {count:,}" for status, count in sorted(self.bad_statuses.items()))
            found.append(f"{self.bad:,} answers were not a 200 with an access_token ({statuses})")
        if errors := {name: count for name, count in self.socket_errors.items() if count}:
            found.append("socket errors " + ", ".join(f"{name} {count:,}" for name, count in errors.items()))
        if not self.requests and not found:
            found.append("no request completed")
        return found


def parse_result(text: str) -> WrkResult:
    result = WrkResult(output=text)
    for line in text.splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX):])
            result.requests = data["requests"]
            result.seconds = data["duration_us"] / 1e6
            result.bytes = data["bytes"]
            result.socket_errors = {name: data[name] for name in ("connect", "read", "write", "timeout")}
            result.non_2xx = data["status"]
            result.bad = data["bad"]
            result.bad_statuses = data["bad_statuses"]
            result.latency_us = {name: float(data[name]) for name in ("p50", "p90", "p99", "p999", "max", "mean")}
    return result


class WrkRun:
    """One wrk process against 127.0.0.1: `threads` threads, `connections` keep-alive connections
    in all, `seconds` (whole seconds: wrk takes no fractions) of load."""

    def __init__(self, wrk: str, target: str, script: Path, work_dir: Path, *, seconds: float, connections: int,
                 threads: int, name: str = "run") -> None:
        if not target.startswith("127.0.0.1:"):
            raise ValueError("wrk only targets 127.0.0.1")
        if connections < threads:
            raise ValueError("at least one connection per thread")
        self.seconds = max(1, math.ceil(seconds))
        self.out = work_dir / f"{name}.out"
        command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{self.seconds}s", "--timeout", "10s",
                   "-s", str(script), f"http://{target}{TOKEN_PATH}"]
        self.started_at = time.monotonic()
        with open(self.out, "w") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self) -> WrkResult:
        """Waits for wrk (killed when it runs 30 s past its duration); its CPU from wait4."""
        deadline = self.started_at + self.seconds + 30
        try:
            while True:
                pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    self.process.send_signal(signal.SIGKILL)
                    pid, status, usage = os.wait4(self.process.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            raise
        self.process.returncode = os.waitstatus_to_exitcode(status)
        result = parse_result(self.out.read_text(errors="replace"))
        result.cpu = usage.ru_utime + usage.ru_stime
        result.returncode = self.process.returncode
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wrk", description="wrk for the benchmark")
    parser.add_argument("--ensure", action="store_true", help="install wrk when it is missing, print its path")
    args = parser.parse_args(argv)
    if args.ensure:
        try:
            print(ensure_wrk(print))
        except WrkMissing as error:
            print(error, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
