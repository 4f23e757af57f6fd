"""The instruments a cell measures with: its context, timers, statistics, meters and checkpoints.

Tasks import these downward; the harness, above tasks, imports them too. Nothing here imports
the harness.
"""
