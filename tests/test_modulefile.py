"""The modulefile template loads with Debian's Environment Modules and gives users
``amore-proto`` and ``import amore.context``, as ``module load amore`` promises in the README."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MODULES_INIT = Path("/usr/share/modules/init/bash")


def _module_shell(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {MODULES_INIT}\n{script}"], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture
def modulepath(tmp_path):
    assert MODULES_INIT.exists(), "environment-modules is not installed (./dev test installs it with apt-get)"
    prefix = Path(sys.executable).parent.parent  # the environment AMORE is installed in
    assert (prefix / "bin" / "amore-proto").exists(), f"no amore-proto in {prefix}/bin"
    text = (REPO / "scripts" / "modulefiles" / "amore.tcl").read_text()
    mp = tmp_path / "modulefiles"
    (mp / "amore").mkdir(parents=True)
    (mp / "amore" / "0.1.0").write_text(text.replace("@PREFIX@", str(prefix)))
    return mp


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    # a login-like PATH without the AMORE environment: the module must add it
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def test_module_load_gives_the_command_and_the_context_api(modulepath, tmp_path):
    env = _clean_env()
    assert _module_shell("command -v amore-proto || echo none", env).stdout.strip() == "none"
    r = _module_shell(f"module use {modulepath}\nmodule load amore\n"
                      "amore-proto --help\n"
                      "cd / && python -c 'import amore.context, sys; print(amore.context.Variable.__name__, sys.prefix)'",
                      env)
    assert r.returncode == 0, r.stderr
    assert "usage: amore-proto" in r.stdout
    assert "Variable" in r.stdout
    assert str(Path(sys.executable).parent.parent) in r.stdout


def test_module_with_a_wrong_prefix_says_so(tmp_path):
    assert MODULES_INIT.exists(), "environment-modules is not installed (./dev test installs it with apt-get)"
    mp = tmp_path / "mf"
    (mp / "amore").mkdir(parents=True)
    text = (REPO / "scripts" / "modulefiles" / "amore.tcl").read_text()
    (mp / "amore" / "0.1.0").write_text(text.replace("@PREFIX@", str(tmp_path / "nowhere")))
    r = _module_shell(f"module use {mp}\nmodule load amore; command -v amore-proto || echo none",
                      _clean_env())
    assert "no amore-proto in" in r.stderr
    assert r.stdout.strip().endswith("none")
