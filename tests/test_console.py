import io
import os
import subprocess
import sys

from rich.console import Console

from biolab.console import (
    Board,
    captured_output,
    clock,
    duration,
    output_captured,
    report,
    report_progress,
    reporting,
    short,
)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def rendered(board: Board) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(board.table())
    return out.getvalue()


def test_a_live_line_shows_the_run_its_stage_steps_loss_speed_and_eta():
    t = FakeClock()
    board = Board(live=False, progress=False, stream=io.StringIO(), timer=t)
    board.handle({"run": "bioS_single", "stage": "pretrain", "state": "building"})
    board.handle({"run": "bioS_single", "step": 0, "total": 4000})
    t.now += 60
    board.handle({"run": "bioS_single", "step": 1200, "total": 4000, "loss": 2.31, "tokens_per_s": 5210.4})
    board.handle({"run": "bioS_multi5_permute_fullname", "stage": "probe", "state": "building"})
    t.now += 5
    text = rendered(board)
    line = next(row for row in text.splitlines() if row.startswith("bioS_single"))
    for part in ("pretrain", "1,200/4,000", "loss 2.310", "5,210 tok/s", "ETA 2:15"):
        assert part in line, line  # 20 steps/s, 2800 to go, 5 s since the report
    probe = next(row for row in text.splitlines() if row.startswith("bioS_multi5"))
    assert "probe" in probe and "0:05 elapsed" in probe and "loss" not in probe
    board.handle({"run": "bioS_single", "end": True})
    assert "bioS_single " not in rendered(board) and "bioS_multi5" in rendered(board)


def test_a_long_run_name_keeps_its_start_and_its_end():
    name = "bioS_single__finetune.train.lr=0.001__model.n_layer=1__lora_r-16"
    cut = short(name)
    assert len(cut) == 40 and cut.startswith("bioS_single__") and cut.endswith("lora_r-16")
    assert short("bioS_single") == "bioS_single"


def test_times_read_as_a_person_says_them():
    assert [duration(s) for s in (42, 360, 5400)] == ["42 s", "6 min", "1 h 30 min"]
    assert duration(None) == duration("12") == "?"  # a status.json without seconds
    assert [clock(s) for s in (5, 432, 3725)] == ["0:05", "7:12", "1:02:05"]


def test_off_a_terminal_each_job_gets_a_plain_line_every_tenth_or_30_s():
    t, out = FakeClock(), io.StringIO()
    with Board(live=False, stream=out, prefix=True, timer=t) as board:
        for run in ("a", "b"):
            board.handle({"run": run, "message": "pretrain: building"})
            board.handle({"run": run, "stage": "pretrain", "state": "building"})
        for step in (0, 50, 100, 150, 200):
            t.now += 1
            for run in ("a", "b"):
                board.handle({"run": run, "step": step, "total": 1000, "loss": 3.0, "tokens_per_s": 900.0})
        t.now += 31  # no new tenth, but 30 s without a line
        board.handle({"run": "a", "step": 210, "total": 1000})
        board.handle({"run": "a", "end": True})
        t.now += 31
        board.handle({"run": "b", "step": 220, "total": 1000})
    lines = out.getvalue().splitlines()
    assert "[a] pretrain: building" in lines and "[b] pretrain: building" in lines
    assert "[a] pretrain 100/1,000 (10%): loss 3.000, 900 tok/s, ETA 0:18" in lines
    a = [line for line in lines if line.startswith("[a] pretrain ")]
    b = [line for line in lines if line.startswith("[b] pretrain ")]
    assert len(a) == 3 and "(20%)" in a[1], lines  # ended: no line for a after
    assert 3 <= len(b) <= 4, lines  # the 1 s ticker may also have printed b's time-based line


def test_a_board_without_progress_prints_only_the_messages():
    out = io.StringIO()
    with Board(progress=False, live=False, stream=out) as board:
        board.handle({"run": "a", "message": "data: reused"})
        board.handle({"run": "a", "step": 1000, "total": 1000})
    assert out.getvalue() == "data: reused\n"


def test_reports_reach_the_sink_in_their_context_and_progress_is_throttled():
    sent = []
    report(stage="pretrain")  # no one listens: nothing happens
    with reporting(sent.append):
        report(stage="pretrain", state="building")
        for step in range(5):
            report_progress(step, 4, loss=1.0)
    report_progress(0, 4)
    assert sent[0] == {"stage": "pretrain", "state": "building"}
    assert [e["step"] for e in sent[1:]] == [0, 4]  # the first, then the last; the rest within 0.5 s


def test_captured_output_takes_python_and_descriptor_output_to_the_log(tmp_path, capfd):
    log = tmp_path / "stage" / "log.txt"
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    with captured_output(log):
        assert output_captured() and not hf_logging.is_progress_bar_enabled()
        print("wandb: Tracking run with wandb version 0.31.0")
        sys.stderr.write("Writing model shards: 100%\n")
        os.write(1, b"from C\n")
    assert not output_captured() and hf_logging.is_progress_bar_enabled() == was
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""
    text = log.read_text()
    for part in ("wandb: Tracking run", "Writing model shards", "from C"):
        assert part in text
    with captured_output(log, enabled=False):
        print("shown")
    assert capfd.readouterr().out == "shown\n" and text == log.read_text()


def test_warnings_and_logging_of_a_plain_process_go_to_the_log(tmp_path):
    # pytest takes warnings and logging records for itself: a process of its own shows the real path
    code = """import logging, sys, warnings
sys.modules["transformers"] = None  # not needed here, and seconds to import
from biolab.console import captured_output
with captured_output(sys.argv[1]):
    warnings.warn("a library warning")
    logging.getLogger("lib").warning("a logged warning")
print("after")
"""
    log = tmp_path / "log.txt"
    r = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "after\n" and r.stderr == "", r.stderr
    assert "UserWarning: a library warning" in log.read_text() and "a logged warning" in log.read_text()
