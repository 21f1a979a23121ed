"""Progress output: bars on a terminal, plain count lines in logs (no carriage returns), nothing with --no-progress."""

import io
import subprocess
import sys

from relabel.progress import CountLines, progress_bar, progress_iter


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_count_lines_without_carriage_returns():
    log = io.StringIO()
    with progress_bar(4, "relabel", "shard", stream=log, interval=0.0) as bar:
        for _ in range(4):
            bar.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("relabel: 1/4 shard (25 %), ")
    assert lines[-1].startswith("relabel: 4/4 shard (100 %), ")


def test_count_lines_are_periodic_not_one_per_update():
    log = io.StringIO()
    bar = CountLines(1000, "simulate", "gal", log, interval=3600)
    for _ in range(1000):
        bar.update()
    assert log.getvalue() == ""  # nothing until the interval has passed ...
    bar.close()
    assert log.getvalue().count("\n") == 1 and "1000/1000 gal" in log.getvalue()  # ... and the final count


def test_an_inner_loop_in_a_log_stays_silent_unless_it_is_slow():
    log = io.StringIO()
    assert list(progress_iter(range(3), "epoch 1/2", stream=log)) == [0, 1, 2]
    assert log.getvalue() == ""  # the epoch's own result line says what happened


def test_a_terminal_gets_a_bar_and_no_progress_gets_nothing():
    from tqdm import tqdm

    term = _Terminal()
    bar = progress_bar(3, "train", "batch", stream=term)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    quiet = io.StringIO()
    with progress_bar(3, "train", stream=quiet, enabled=False) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_simulate_into_a_log_file_writes_no_carriage_return(tmp_path):
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "relabel.cli", "simulate", str(tmp_path / "sim"), "--n", "30",
                               "--workers", "1", "--size", "32"], stderr=log, stdout=subprocess.PIPE, timeout=300)
    assert proc.returncode == 0
    text = (tmp_path / "log").read_text()
    assert "\r" not in text and "simulate: 30/30 gal (100 %)" in text
