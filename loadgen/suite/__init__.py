"""The suite: what runs the load generator many times and concludes from it (A/B gates, paired rounds).

The load generator proper lives in ``loadgen/`` (run, runner, engine, stats); the suite's newer modules live
here, the older ones (bench, report, compare, cost, calibrate) move in when the layout issue lands.
"""
