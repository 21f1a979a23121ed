"""Where shards run: existing schedulers, the caller's Client, and every way a cluster can be unusable.

Each failure must be one clear line, bounded in time, leaving no output folder and no global
Dask state behind. Every scheduler here is real and bound to 127.0.0.1.
"""

import json
import socket

import dask
import pandas as pd
import pytest
import yaml

from relabel.cli import main
from relabel.errors import ClusterError, ConfigError, WorkersMissing
from relabel.run.clusters import ClusterOptions, scheduler_address
from relabel.run.pipeline import run_catalog

NONE = ClusterOptions(kind="none")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(root, model, out, **kw):
    kw.setdefault("bias", False)
    kw.setdefault("progress", False)
    return run_catalog(root / "catalog.fits", model, out, workflow=root / "workflow.yaml", **kw)


def _cli(root, model, out, *extra):
    return main(["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(out),
                 "--config", str(root / "workflow.yaml"), "--no-bias", "--no-progress", *extra])


def _scheduler_file(path, address):
    """A scheduler file as `dask scheduler --scheduler-file` writes it."""
    path.write_text(json.dumps({"type": "Scheduler", "id": "Scheduler-0", "address": address,
                                "services": {"dashboard": 8787}, "started": 0, "workers": {}}))
    return path


@pytest.mark.parametrize("address, message", [
    ("tcp://127.0.0.1", "missing port number"),
    ("127.0.0.1", "missing port number"),
    ("foo://127.0.0.1:8786", "unknown protocol 'foo'"),
    ("/no/such/scheduler.json", "missing port number"),
])
def test_malformed_addresses_are_named_with_the_cause(address, message):
    with pytest.raises(ClusterError) as err:
        scheduler_address(address, None)
    assert f"got {address!r}" in str(err.value) and message in str(err.value)


def test_scheduler_files_give_the_address_or_say_what_is_wrong(tmp_path):
    good = _scheduler_file(tmp_path / "scheduler.json", "tcp://127.0.0.1:8799")
    assert scheduler_address(None, str(good)) == "tcp://127.0.0.1:8799"
    assert scheduler_address(str(good), None) == "tcp://127.0.0.1:8799"  # a file given where an address goes
    with pytest.raises(ClusterError, match="scheduler file .*missing.json does not exist"):
        scheduler_address(None, str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ClusterError, match="is not one `dask scheduler --scheduler-file` wrote"):
        scheduler_address(None, str(tmp_path / "bad.json"))


@pytest.mark.parametrize("how", ["address", "file"])
def test_unreachable_scheduler_is_one_line_and_leaves_nothing(tiny_run, tmp_path, capsys, how):
    root, _, _, model = tiny_run
    address = f"tcp://127.0.0.1:{_free_port()}"  # a closed port: refused at once
    where = ["--scheduler", address] if how == "address" else [
        "--scheduler-file", str(_scheduler_file(tmp_path / "scheduler.json", address))]
    out = tmp_path / "out"
    with dask.config.set({"relabel.connect-timeout": "2s"}):
        assert _cli(root, model, out, *where) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"relabel: error: cannot reach the Dask scheduler at {address}")
    assert not out.exists(), "a refused run writes nothing, so a retry needs no --overwrite"
    assert dask.config.get("scheduler", None) is None, "a failed Client leaves no global scheduler setting"


def test_an_address_where_something_else_answers_is_one_line(tiny_run, tmp_path, capsys):
    """A web server (or anything not Dask) on the port: Dask reads its bytes as a frame length."""
    import threading

    root, _, _, model = tiny_run
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    out = tmp_path / "out"
    try:
        with dask.config.set({"relabel.connect-timeout": "3s"}):
            assert _cli(root, model, out, "--scheduler", f"tcp://127.0.0.1:{port}") == 2
    finally:
        server.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the Dask scheduler at tcp://127.0.0.1:{port}" in err[0], err
    assert not out.exists()


def test_scheduler_without_workers_fails_after_the_worker_timeout(tiny_run, tmp_path):
    from distributed import LocalCluster

    root, _, _, model = tiny_run
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder stays empty
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=":0") as cluster:
        with pytest.raises(WorkersMissing) as err:
            _run(root, model, out, cluster=ClusterOptions(scheduler=cluster.scheduler_address, worker_timeout=2))
    message = str(err.value)
    assert message.startswith(f"scheduler {cluster.scheduler_address} has 0 of 1 workers after 2 s; nothing was run")
    assert "dask worker" in message
    assert list(out.iterdir()) == []


def test_run_through_a_scheduler_file(tiny_run, tmp_path):
    from distributed import LocalCluster

    root, _, _, model = tiny_run
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster:
        path = _scheduler_file(tmp_path / "scheduler.json", cluster.scheduler_address)
        result = _run(root, model, tmp_path / "out", cluster=ClusterOptions(scheduler_file=str(path)), shard_size=20)
        workers = set(cluster.scheduler_info["workers"])
    assert result.summary["rows_out"] == 40
    assert {w.rsplit(":", 1)[0] for w in result.summary["workers"]} <= {"127.0.0.1", socket.gethostname()}
    assert len(workers) == 1


def test_a_run_inside_a_client_context_uses_it_and_makes_no_second_cluster(tiny_run, tmp_path):
    from distributed import Client, LocalCluster
    from distributed.scheduler import Scheduler

    root, _, _, model = tiny_run
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        pid = list(client.run(lambda: __import__("os").getpid()).values())[0]
        schedulers = len(Scheduler._instances)
        result = _run(root, model, tmp_path / "out", shard_size=20)
        assert len(Scheduler._instances) == schedulers, "no second scheduler was started"
        assert {r["pid"] for r in result.shard_results} == {pid}, "every shard ran on the caller's worker"
        assert client.status == "running", "the caller's Client is not closed"
        assert client.submit(sum, [1, 2]).result() == 3
        # an explicit client= works the same without being the default
        other = _run(root, model, tmp_path / "out2", shard_size=20, client=client)
        assert {r["pid"] for r in other.shard_results} == {pid}
    assert result.summary["rows_out"] == 40


def test_unknown_cluster_kind_in_the_workflow_writes_nothing(tiny_run, tmp_path, capsys):
    root, _, _, model = tiny_run
    wf = yaml.safe_load((root / "workflow.yaml").read_text())
    wf["cluster"] = {"kind": "slurmm"}
    (root / "workflow.yaml").write_text(yaml.safe_dump(wf))
    out = tmp_path / "out"
    assert _cli(root, model, out) == 2
    assert "key 'cluster.kind' must be one of local, slurm" in capsys.readouterr().err
    assert not out.exists()


def test_missing_scheduler_interface_is_refused_before_anything_starts(tiny_run, tmp_path, capsys):
    root, _, _, model = tiny_run
    out = tmp_path / "out"
    assert _cli(root, model, out, "--cluster", "pbs", "--scheduler-interface", "nosuch0") == 2
    err = capsys.readouterr().err
    assert "network interface 'nosuch0' does not exist on this host (it has " in err and "lo" in err
    assert not out.exists()


def test_resume_uses_the_recorded_shard_size(tiny_run, tmp_path):
    root, _, _, model = tiny_run
    out = tmp_path / "out"
    first = _run(root, model, out, cluster=NONE, shard_size=10)
    files = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(files) >= 4
    before = pd.read_parquet(out).sort_values("row").reset_index(drop=True)
    (out / files[1]).unlink()
    (out / files[3]).unlink()
    again = _run(root, model, out, cluster=NONE, resume=True)  # the workflow says 2048 rows per shard
    assert again.summary["shards_this_run"] == 2
    assert sorted(p.name for p in out.glob("part-*.parquet")) == files
    pd.testing.assert_frame_equal(pd.read_parquet(out).sort_values("row").reset_index(drop=True), before)
    assert first.summary["rows_out"] == again.summary["rows_out"] == 40


def test_library_calls_leave_the_callers_process_as_it_was(tiny_run, tmp_path):
    import torch

    root, _, _, model = tiny_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(root, model, tmp_path / "out", cluster=NONE)
        assert torch.get_num_threads() == 1, "torch threads of the caller's process unchanged"
    finally:
        torch.set_num_threads(threads)
    assert dask.config.get("scheduler", None) is None


def test_quiet_and_verbose_flags_set_the_relabel_logger(tiny_run, tmp_path, capsys):
    root, _, _, model = tiny_run
    assert _cli(root, model, tmp_path / "a", "--cluster", "none") == 0
    assert "relabel run: 40 rows in 1 shards" in capsys.readouterr().out
    assert main(["-q", "run", str(root / "catalog.fits"), "--model", str(model), "--out", str(tmp_path / "b"),
                 "--config", str(root / "workflow.yaml"), "--no-bias", "--no-progress", "--cluster", "none"]) == 0
    assert capsys.readouterr().out == ""


def _worker_settings(_):
    import os

    from relabel.run.inference import _worker_threads

    return _worker_threads(), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_get_their_environment_through_pre_spawn_environ(monkeypatch):
    import os

    # Dask gives variables already in the environment precedence over pre-spawn-environ (a user's own
    # MALLOC_TRIM_THRESHOLD_ wins); other tests' in-process nannies may have left theirs here.
    for name in ("MALLOC_TRIM_THRESHOLD_", "DASK_RELABEL__WORKER_CORES"):
        monkeypatch.delenv(name, raising=False)

    import distributed  # noqa: F401  (its defaults enter dask.config on import)

    from relabel.run.clusters import local_cluster

    before = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ = dict(os.environ)
    with local_cluster(ClusterOptions(workers=2, dashboard_address="127.0.0.1:0")) as handle:
        client = handle.client
        workers = list(client.scheduler_info()["workers"])
        seen = client.gather([client.submit(_worker_settings, w, workers=[w], pure=False) for w in workers])
    cores = max(1, (os.cpu_count() or 1) // 2)
    assert len(seen) == 2 and set(seen) == {(cores, str(256 * 2**20))}
    assert dict(dask.config.get("distributed.nanny.pre-spawn-environ")) == before, "the caller's config is unchanged"
    # distributed's in-process nannies write OMP_NUM_THREADS=1 etc. into os.environ before spawning: put back
    assert dict(os.environ) == environ, "the caller's environment is unchanged"
