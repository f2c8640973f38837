"""`runscaler doctor`: check the environment and find (and remove) what a fleet left behind.

`examining.examine` runs it all and returns a `report.DoctorReport`; `checks` holds the
environment checks, `leftovers` the search, `fixing` the removal. The command module only
parses flags and renders the report (`runscaler.console.doctor`).
"""

from runscaler.doctoring.examining import DoctorSettings, examine
from runscaler.doctoring.report import Check, DoctorReport, Leftover, Outcome

__all__ = ["Check", "DoctorReport", "DoctorSettings", "Leftover", "Outcome", "examine"]
