"""Turn the master's absolute time into advances for QEMU.

Advances are computed from absolute time, never by summing step sizes, so
rounding never accumulates: after any sequence of steps QEMU's virtual time
is the master's elapsed time rounded to the nanosecond.  When QEMU reports
more time than asked (KVM), the surplus is absorbed by later steps.
"""

from __future__ import annotations


class StepClock:
    """Master time and QEMU time, both measured from the start time."""

    def __init__(self, start_time: float) -> None:
        self.start_time = start_time
        self.qemu_ns = 0

    def advance_for(self, end_time: float) -> int:
        """The advance (ns) that brings QEMU to master time ``end_time``.

        Zero when QEMU is already there or ahead (it then sits this step out).
        """
        target_ns = round((end_time - self.start_time) * 1e9)
        return max(0, target_ns - self.qemu_ns)

    def record(self, elapsed_ns: int) -> None:
        self.qemu_ns += elapsed_ns

    def to_master(self, qemu_ns: int) -> float:
        """A point on QEMU's clock, in master time (s)."""
        return self.start_time + qemu_ns * 1e-9

    @property
    def qemu_time(self) -> float:
        """QEMU's virtual clock expressed in master time (s)."""
        return self.to_master(self.qemu_ns)
