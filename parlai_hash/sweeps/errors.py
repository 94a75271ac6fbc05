"""The one error type of the sweeps: where in the sweep file, what is wrong, the fix."""

from __future__ import annotations

from parlai_hash.errors import OptionError


class SweepError(OptionError):
    """A bad sweep file or a sweep that cannot run; printed as one line.

    ``where`` names the place, e.g. ``sweeps/table1.yaml: points[2] (hash_1x64)``.
    """

    def __init__(self, where: str, problem: str, fix: str):
        super().__init__(where, problem, fix)
