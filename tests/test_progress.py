"""Progress reporting: a rich bar on a terminal, short plain lines elsewhere."""

import io

from fedsynth.common.progress import ProgressReporter, counted


def steps(progress, total=30):
    progress("all 3 organisations accept schema 'adult'  [epsilon spent 0.000 of 1]")
    for step in range(1, total + 1):
        progress(f"teacher: DP-SGD step {step}/{total}  [epsilon spent {step / 100:.3f} of 1]")
    progress("sampled 5,000 synthetic rows")


def test_counting_messages_are_recognised_by_their_done_over_total():
    assert counted("generator round 2/5: measured a x b") == ("generator round", 2, 5, "measured a x b")
    assert counted("teacher: DP-SGD step 7/30  [epsilon spent 0.5 of 1]")[:3] == ("teacher: DP-SGD step", 7, 30)
    assert counted("sampled 5,000 synthetic rows") is None


def test_off_a_terminal_a_counted_task_prints_its_first_step_each_tenth_and_its_last():
    out = io.StringIO()  # not a terminal
    with ProgressReporter(out) as progress:
        steps(progress)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("all 3 organisations") and lines[-1] == "sampled 5,000 synthetic rows"
    counted_steps = [int(line.split("step ")[1].split("/")[0]) for line in lines[1:-1]]
    assert counted_steps == [1, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert "\x1b[" not in out.getvalue()  # no terminal control codes in a log


def test_on_a_terminal_counted_tasks_draw_a_bar_and_other_messages_print_above_it():
    out = io.StringIO()
    with ProgressReporter(out, bar=True) as progress:
        steps(progress)
    text = out.getvalue()
    assert "all 3 organisations accept schema 'adult'" in text and "sampled 5,000 synthetic rows" in text
    assert "teacher: DP-SGD step" in text and "30/30" in text and "━" in text  # the bar, complete
    assert "teacher: DP-SGD step 17/30" not in text  # steps move the bar instead of printing lines
