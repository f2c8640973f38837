"""The seeded chaos suite: the real operator, the simulator and a dedicated engine, under faults.

`python -m tests.chaos --seed N` (or `make chaos SEED=N`) replays one seed; see `run.py`.
"""
