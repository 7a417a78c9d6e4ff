"""Several exported bundles run the way `python -m monai.bundle run` runs one, in ONE interpreter start.

Each `python -S -m monai.bundle run` pays for starting Python and importing torch and MONAI (seconds of CPU), far
more than the bundle's own work on a test image. `start_bundles` starts one fresh interpreter of the isolated
environment (`tests.bundle_env`: `python -S -B`, only the installed packages on the path, the project not
importable) that imports torch and `monai.bundle` once, then runs each job as `python -m monai.bundle run ARGS`
would: its own working folder first on `sys.path` (as `-m` puts it), `runpy` running `monai.bundle` as
`__main__` with the job's arguments (fire reads them), its output (file descriptors 1 and 2) in its own log, its
exit status as the interpreter would give it (0, a SystemExit code, 1 after an exception, whose traceback is in
the log). Between jobs `sys.path` and the working folder are restored and every module the job imported from a
bundle (its copied `scripts` package) is forgotten, so each bundle imports its own code afresh; installed
packages stay imported, as in any interpreter that has run something before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.export.bundle import bundle_command
from tests.bundle_env import isolated_env

DRIVER = r"""
import json, os, runpy, sys, traceback
import torch, monai.bundle  # what every bundle run imports: paid once

jobs, results_path = json.loads(sys.argv[1]), sys.argv[2]
base_path, home = list(sys.path), os.getcwd()
codes = []
for job in jobs:
    os.chdir(job["cwd"])
    sys.path[:] = [os.getcwd(), *base_path[1:]]  # python -m: the working folder first
    sys.argv = ["monai.bundle", *job["args"]]
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1), os.dup2(log, 2)
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    for fd in (log, *saved):
        os.close(fd)
    codes.append(code)
    root = os.path.realpath(job["bundle"])
    for name, module in list(sys.modules.items()):
        where = os.path.realpath(getattr(module, "__file__", None) or "/")
        if name == "scripts" or name.startswith("scripts.") or where.startswith(root + os.sep):
            del sys.modules[name]
    sys.path[:] = base_path
    os.chdir(home)
with open(results_path, "w") as fh:
    json.dump(codes, fh)
"""


@dataclass
class BundleRuns:
    """Bundle jobs running in one interpreter (`start_bundles`); `results` waits for them."""

    proc: subprocess.Popen
    logs: list[Path]
    results_path: Path

    def results(self, timeout: float = 300) -> list[tuple[int, str]]:
        """(exit status, log) of each job, in job order; AssertionError with the driver's output if it broke."""
        output, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0 and self.results_path.is_file(), output[-3000:]
        codes = json.loads(self.results_path.read_text())
        return [(code, log.read_text(errors="replace")) for code, log in zip(codes, self.logs, strict=True)]


def start_bundles(jobs: list[tuple[str | Path, str | Path, str | Path]], cwd: str | Path,
                  workdir: str | Path) -> BundleRuns:
    """Start running each (bundle, image, output) of `jobs` as `python -m monai.bundle run` from `cwd`, one after
    the other in one fresh isolated interpreter; logs and the exit statuses are written into `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logs = [workdir / f"bundle_job_{i}.log" for i in range(len(jobs))]
    spec = []
    for (bundle, image, out), log in zip(jobs, logs, strict=True):
        argv = bundle_command(bundle, str(image), str(out))
        assert argv[:3] == ["-B", "-m", "monai.bundle"], argv
        spec.append({"bundle": str(bundle), "args": argv[3:], "cwd": str(cwd), "log": str(log)})
    results_path = workdir / "bundle_jobs.json"
    proc = subprocess.Popen([sys.executable, "-S", "-B", "-c", DRIVER, json.dumps(spec), str(results_path)],
                            cwd=cwd, env=isolated_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return BundleRuns(proc, logs, results_path)
