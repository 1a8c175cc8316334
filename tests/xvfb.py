"""A private X server (Xvfb) on a free display number, for GUI tests and benchmarks on the real
``xcb`` platform. Xvfb picks the number itself (``-displayfd``), so parallel runs never clash."""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from contextlib import contextmanager


@contextmanager
def xvfb(width: int = 1600, height: int = 1000, depth: int = 24, timeout: float = 20.0):
    """``with xvfb() as display:`` -> ``":N"``; the server is stopped afterwards.

    Raises ``RuntimeError`` if Xvfb is not installed (``./dev test`` installs it: ``apt-get
    install xvfb``) or does not start."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise RuntimeError("Xvfb is not installed: './dev test' installs it "
                           "(or 'sudo apt-get install xvfb')")
    r, w = os.pipe()
    log = tempfile.TemporaryFile()
    p = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", f"{width}x{height}x{depth}",
                          "-nolisten", "tcp", "-noreset"], pass_fds=(w,),
                         stdout=subprocess.DEVNULL, stderr=log)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        num = os.read(r, 64).decode().strip() if ready else ""
        if not num.isdigit():
            p.kill()
            p.wait()
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise RuntimeError(f"Xvfb did not start: {err.strip()[-500:]}")
        yield f":{num}"
    finally:
        os.close(r)
        log.close()
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
