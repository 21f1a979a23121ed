"""Optional dependencies: a missing extra is named with its pip command, through the CLI too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relabel.errors import MissingDependencyError, RelabelError
from relabel.optional import require


def test_a_missing_module_names_the_extra_that_installs_it():
    with pytest.raises(MissingDependencyError, match=r"pip install 'relabel\[sim\]'") as err:
        require("relabel_no_such_module", "sim", "the survey simulator")
    assert "the survey simulator needs the Python package 'relabel_no_such_module'" in str(err.value)
    assert isinstance(err.value, RelabelError) and isinstance(err.value, ImportError)


def test_simulate_without_galsim_is_one_clear_line(tmp_path):
    # A child interpreter in which galsim cannot be imported (None in sys.modules blocks the import),
    # running the real CLI: the user sees the extra to install, not an ImportError traceback.
    code = ("import sys; sys.modules['galsim'] = None; from relabel.cli import main; "
            f"sys.exit(main(['simulate', {str(tmp_path / 'survey')!r}, '--n', '10']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("relabel: error: the survey simulator needs")
    assert "pip install 'relabel[sim]'" in lines[0]
    assert not (tmp_path / "survey").exists()


def test_a_job_queue_without_dask_jobqueue_is_one_clear_line(tiny_run):
    root, _, _, model = tiny_run
    argv = ["run", str(root / "catalog.fits"), "--model", str(model), "--config", str(root / "workflow.yaml"),
            "--out", str(root / "out"), "--cluster", "slurm", "--dry-run"]
    code = f"import sys; sys.modules['dask_jobqueue'] = None; from relabel.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'relabel[queues]'" in done.stderr and "Traceback" not in done.stderr
    assert not (root / "out").exists()
