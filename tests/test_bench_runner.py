"""bench.gpu_run: each part in its own process group, stopped at its limit, recorded in parts.jsonl."""

import json
import subprocess
import time

from bench import gpu_run


def records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "parts.jsonl").read_text().splitlines()]


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs, a moment after the signal (a zombie waiting for init is gone)."""
    for _ in range(20):
        listing = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True, check=True).stdout
        if not any(line.split()[0] == str(pgid) and "Z" not in line.split()[1] for line in listing.splitlines()):
            return False
        time.sleep(0.1)
    return True


def test_parts_record_exit_status_output_and_limit(tmp_path, capsys):
    runner = gpu_run.PartRunner(tmp_path, gpu_run.part_environment(smoke=True))
    assert runner.run("fails", 10, ["bash", "-c", "echo first; echo 'the last line' >&2; exit 3"]) == 3
    assert runner.run("passes", 10, ["bash", "-c", "echo done; echo"]) == 0
    assert (tmp_path / "fails.log").read_text() == "first\nthe last line\n"
    assert "== fails: exit 3" in capsys.readouterr().out  # streamed to the console as well
    fails, passes = records(tmp_path)
    assert fails | {"wall_s": 0} == {"part": "fails", "rc": 3, "limit_s": 10, "wall_s": 0, "last_line": "the last line"}
    assert passes["rc"] == 0
    assert passes["last_line"] == "done"  # blank lines do not count


def test_a_part_past_its_limit_is_stopped_with_its_whole_group(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_run, "KILL_AFTER_S", 1)
    runner = gpu_run.PartRunner(tmp_path, gpu_run.part_environment(smoke=True))
    # A child in the background, as compiler workers are: it must go with the part.
    pgid = tmp_path / "pgid"
    stopped = ["bash", "-c", f"echo $$ > {pgid}; sleep 60 & sleep 60"]
    assert runner.run("stopped", 1, stopped) == 124
    assert not group_alive(int(pgid.read_text()))
    # SIGTERM ignored (and by the children, which inherit it): SIGKILL follows.
    deaf = ["bash", "-c", f"trap '' TERM; echo $$ > {pgid}; sleep 60 & sleep 60"]
    assert runner.run("deaf", 1, deaf) == 137
    assert not group_alive(int(pgid.read_text()))
    assert [record["rc"] for record in records(tmp_path)] == [124, 137]


def test_limits_beyond_the_total_stop_the_run_before_anything_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOTAL_LIMIT", "480")
    monkeypatch.setenv("LIMIT_STEP_JAX", "400")
    assert gpu_run.run_gpu(tmp_path / "results", smoke=True) == 2
    assert not (tmp_path / "results").exists()
    assert "more than 480 s" in capsys.readouterr().err
