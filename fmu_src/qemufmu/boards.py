"""The instruction rate a board really has: its icount shift by default.

Under ``-icount shift=N`` every guest instruction takes 2^N ns of virtual
time. A microcontroller's core executes about one instruction per clock
cycle, so the shift closest to its board's clock keeps busy-wait delays,
the work done between two interrupts and the time an idle loop spins what
they would be on the hardware. Shift 0 (10^9 instructions per second)
makes a 25 MHz Cortex-M3 forty times too fast and has QEMU execute forty
times the idle-loop instructions of the real board.

The clocks are the ones QEMU's board models run their system clock at
(hw/arm/*.c and the SoC files they use); boards whose firmware sets the
clock at run time (Stellaris, B-L475E-IOT01A) are not here. docs/boards.md
has the table with its sources.
"""

from __future__ import annotations

import math

#: machine (-M) -> the CPU clock its QEMU model runs at, in Hz
BOARD_CLOCK_HZ: dict[str, int] = {
    "mps2-an385": 25_000_000,
    "mps2-an386": 25_000_000,
    "mps2-an500": 25_000_000,
    "mps2-an511": 25_000_000,
    "mps2-an505": 20_000_000,
    "mps2-an521": 20_000_000,
    "mps3-an524": 32_000_000,
    "mps3-an547": 32_000_000,
    "musca-a": 40_000_000,
    "musca-b1": 40_000_000,
    "microbit": 16_000_000,
    "stm32vldiscovery": 24_000_000,
    "netduino2": 120_000_000,
    "netduinoplus2": 168_000_000,
    "olimex-stm32-h405": 168_000_000,
}

#: icount_shift's value that asks for the board's own rate
BOARD_SHIFT = -1
#: the shift of machines not in the table (x86 ``pc``, ``q35``, ``virt``...)
OTHER_SHIFT = 0


def shift_for_clock(hz: float) -> int:
    """The icount shift whose 2^shift ns is nearest (by ratio) to 1/hz."""
    return max(0, round(math.log2(1e9 / hz)))


def board_shift(machine: str) -> int:
    """The icount shift for ``machine``: its board's clock, else 0."""
    hz = BOARD_CLOCK_HZ.get(machine)
    return OTHER_SHIFT if hz is None else shift_for_clock(hz)


def effective_shift(icount_shift: int, machine: str) -> int:
    """What ``-icount shift=`` gets: the parameter, or the board's own."""
    return board_shift(machine) if icount_shift == BOARD_SHIFT else icount_shift
