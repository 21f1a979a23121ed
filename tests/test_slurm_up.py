""".ci/slurm-up makes its own SLURM (own folder, ports, munge) and leaves any other one alone."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "slurm-up"
can_start = os.geteuid() == 0 and all(shutil.which(c) for c in ("slurmctld", "slurmd", "munged", "sinfo"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon_pids() -> dict[int, str]:
    pids = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                name = (proc / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("slurmctld", "slurmd", "munged"):
                pids[int(proc.name)] = name
    return pids


@pytest.mark.slurm
@pytest.mark.skipif(not can_start, reason="needs root and the SLURM and munge daemons installed (.ci/slurm-up)")
def test_slurm_up_starts_its_own_cluster_beside_others_and_stops_only_it(tmp_path):
    before = _daemon_pids()
    env = {**os.environ, "RELABEL_SLURM_DIR": str(tmp_path / "slurm"), "RELABEL_SLURMCTLD_PORT": str(_free_port()),
           "RELABEL_SLURMD_PORT": str(_free_port()), "RELABEL_SLURM_WAIT": "60"}
    env.pop("SLURM_CONF", None)
    try:
        up = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        conf = up.stdout.strip().splitlines()[-1]
        assert conf == str(tmp_path / "slurm" / "slurm.conf")
        assert (tmp_path / "slurm" / "env").read_text().strip() == f"export SLURM_CONF={conf}"
        show = subprocess.run(["scontrol", "show", "config"], env={**env, "SLURM_CONF": conf}, capture_output=True,
                              text=True, timeout=30).stdout
        assert "relabel-ci" in show and env["RELABEL_SLURMCTLD_PORT"] in show
        job = subprocess.run(["sbatch", "--parsable", "--wait", "-o", str(tmp_path / "job.out"), "--wrap",
                              "echo $SLURM_CLUSTER_NAME"], env={**env, "SLURM_CONF": conf}, capture_output=True,
                             text=True, timeout=120)
        assert job.returncode == 0, job.stderr
        assert (tmp_path / "job.out").read_text().strip() == "relabel-ci"
        # a second call reuses what it started
        again = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "--down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    # every daemon that ran before still runs, untouched
    after = _daemon_pids()
    assert {pid: name for pid, name in before.items() if pid in after} == before
    assert "/etc/slurm" not in (tmp_path / "slurm" / "slurm.conf").read_text()
