"""The live view of a run (loadgen/runner.py Progress, live_line): drawn on a terminal, absent elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from loadgen.runner import Progress, live_line


def test_the_live_line_names_the_rate_p99_errors_server_cpu_and_the_phase():
    text = live_line(3.2, 55, 59800.4, 812.25, 3, 87.5, ("spike", 150000.0))
    assert text == "  3.2/55 s     59,800 msgs/s  p99    812.2 us  errors 3  server CPU  87.5%  [spike 150,000/s offered]"
    assert "server CPU" not in live_line(1.0, 10, 100.0, 50.0, 0, None, None)  # an external server: no CPU known


def test_it_renders_on_a_terminal_and_is_absent_when_not_one(capsys):
    buf = io.StringIO()
    tty = Console(file=buf, force_terminal=True, width=120)
    p = Progress(quiet=False, total_s=10, console=tty)
    assert p.live is not None and p.shows and not p.plain
    p.update(live_line(1.0, 10, 1000.0, 90.0, 0, 12.0, ("hold", 1000.0)))
    p.stop()
    assert "1,000 msgs/s" in buf.getvalue() and "[hold 1,000/s offered]" in buf.getvalue()
    # not a terminal: no live display, plain lines on stderr at most once a second
    pipe = Console(file=io.StringIO(), force_terminal=False)
    q = Progress(quiet=False, total_s=10, console=pipe)
    assert q.live is None and q.plain
    for _ in range(5):
        q.update("a line")
    assert capsys.readouterr().err.count("loadgen: a line") == 1
    assert Progress(quiet=True, total_s=10, console=tty).live is None  # --quiet: nothing at all
