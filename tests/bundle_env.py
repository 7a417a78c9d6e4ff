"""Running an exported bundle the way a clinician would, outside LoRKD Studio: `python -m monai.bundle run` in a
fresh interpreter where the project itself cannot be imported.

The project is installed editable (a `.pth` file in site-packages hooks `core` and `app` into every
interpreter), so a plain subprocess would import `core` even from another folder and a bundle script that
imported `core` by mistake would still run. `python -S` skips site-packages' `.pth` files; the installed packages
(torch, MONAI, SimpleITK, ...) are put back on the path as plain folders, so only the project is missing.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

from core.export.bundle import bundle_command


def isolated_env() -> dict[str, str]:
    """Environment for `python -S`: the site-packages folders on PYTHONPATH, nothing of the project."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    return env


def bundle_argv(bundle: str | Path, image: str | Path, out: str | Path) -> list[str]:
    """`python -S -m monai.bundle run ...` for `bundle` on `image` writing `out`."""
    return [sys.executable, "-S", *bundle_command(bundle, str(image), str(out))]


def project_importable(cwd: str | Path) -> bool:
    """Whether `import core` works in the isolated environment from `cwd` (it must not)."""
    code = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('core') else 3)"
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=isolated_env(), capture_output=True)
    return result.returncode == 0
