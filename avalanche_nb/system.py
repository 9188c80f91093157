"""System tools the project installs from Debian's packages when they are missing: TeX Live for the
paper, Chromium for figure export and the browser test. Needs root or passwordless sudo."""

from __future__ import annotations

import os
import shutil
import subprocess


# Chromium-family browsers kaleido can drive for the figures' SVG/PNG (plots.show), by executable name
CHROME_BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class SystemToolError(RuntimeError):
    """A system tool is missing and could not be installed."""


def browser() -> str | None:
    """The Chromium-family browser kaleido would drive: ``$BROWSER_PATH``, else the first of
    :data:`CHROME_BINARIES` on PATH; None when there is none."""
    given = os.environ.get("BROWSER_PATH")
    if given and os.access(given, os.X_OK):
        return given
    return next((found for name in CHROME_BINARIES if (found := shutil.which(name))), None)


def ensure(binary: str, packages: tuple[str, ...]) -> str:
    """The path of ``binary``, installing ``packages`` with apt first when it is not on PATH.

    Installs from concurrent processes (two test workers, a run beside a paper build) take turns on a
    lock file: dpkg allows one at a time, and a second install would fail on its lock."""
    found = shutil.which(binary)
    if found:
        return found
    import fcntl
    import tempfile

    with open(os.path.join(tempfile.gettempdir(), "avalanche_nb-apt.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return shutil.which(binary) or _install(binary, packages)


def _install(binary: str, packages: tuple[str, ...]) -> str:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    for cmd in (install, ["apt-get", "update", "-qq"], install):  # an install from stale lists may fail once
        try:
            subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SystemToolError(f"could not run {' '.join(sudo + cmd)}: {err}") from None
        found = shutil.which(binary)
        if found:
            return found
    raise SystemToolError(f"{binary} is missing and `apt-get install {' '.join(packages)}` did not provide it "
                          "(it needs root or passwordless sudo): install it, then rerun")
