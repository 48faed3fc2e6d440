"""scripts/install.sh's output filter hides setuptools' editable-install warning block and pip's location
warnings, and keeps real errors (issue 9, item 10)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISY = """\
/tmp/pip-build-env/lib/python3.12/site-packages/setuptools/config/_apply_pyprojecttoml.py:82: SetuptoolsDeprecationWarning: `project.license` as a TOML table is deprecated
!!

        ********************************************************************************
        Please use a simple string containing a SPDX expression for `project.license`.

        By 2026-Feb-18, you need to update your project and remove deprecated calls
        or your builds will no longer be supported.
        ********************************************************************************

!!
  corrected = dist._finalize_license_expression()
  /tmp/pip-build-env-i9nb0axj/overlay/lib/python3.11/site-packages/setuptools/command/editable_wheel.py:354: BuildBackendWarning: Editable installation.
WARNING: Location 'x' is ignored: it is either a non-existing path or lacks a specific scheme.
ERROR: Could not find a version that satisfies the requirement nothing==0
"""


@pytest.mark.skipif(shutil.which("awk") is None, reason="awk not installed")
def test_filter_drops_the_setuptools_block_and_keeps_errors():
    out = subprocess.run(["awk", "-f", str(ROOT / "scripts" / "pip_filter.awk")], input=NOISY, text=True,
                         capture_output=True, check=True).stdout
    assert out.strip() == "ERROR: Could not find a version that satisfies the requirement nothing==0"
