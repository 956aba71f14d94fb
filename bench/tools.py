"""The C load generators the benchmark drives (h2load, wrk): found on PATH, or installed from the
Debian/Ubuntu package with apt-get (as root, or through a password-less sudo), with an
`apt-get update` and a second try when the first fails. When that is impossible, ToolMissing says
how to install the tool by hand."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable

INSTALL_TIMEOUT = 600.0


class ToolMissing(RuntimeError):
    pass


def ensure_tool(binary: str, package: str, how: str, say: Callable[[str], None]) -> str:
    """The path of `binary`; installs `package` with apt-get when it is not on PATH. `how` is the
    advice given when that cannot be done (install it yourself, or leave out the rows needing it)."""
    found = shutil.which(binary)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise ToolMissing(f"{binary} is not on PATH and there is no apt-get here: {how}")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=30,
                                          check=False).returncode:
            raise ToolMissing(f"{binary} is not on PATH and installing {package} needs root: {how}")
        prefix = [sudo, "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, apt, "install", "-y", "--no-install-recommends", package]
    say(f"{binary} is not on PATH: {shlex.join(install)}")
    failure = ""
    for step in (None, [*prefix, apt, "update"]):  # the second try refreshes the package lists first
        try:
            if step is not None:
                say(f"  retrying after {shlex.join(step)}")
                subprocess.run(step, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            failure = f"timed out after {INSTALL_TIMEOUT:.0f} s"
            continue
        found = shutil.which(binary)
        if done.returncode == 0 and found:
            say(f"  installed {found}")
            return found
        last_lines = (done.stderr or done.stdout).strip().splitlines()
        failure = last_lines[-1] if last_lines else f"exit {done.returncode}"
    raise ToolMissing(f"{binary} is not on PATH and `apt-get install {package}` failed ({failure}): {how}")
