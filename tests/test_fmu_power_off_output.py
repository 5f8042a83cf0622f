"""Through the FMU: the step in which the guest powers off returns Discard
with the cause in the log, and what the guest printed in that step is
still delivered (log, console transcript, ``console`` output).
"""

from __future__ import annotations

import re

import pytest
from fmpy.fmi1 import FMICallException

from fmi_helpers import Instance, qemu_children

DISCARD = 2


@pytest.mark.parametrize("shift,h", [(0, 1e-5), (0, 1e-3), (3, 1e-3), (3, 0.1),
                                     (7, 0.01), (7, 1.0)])
def test_power_off_step_is_discarded_and_its_output_delivered(
        fmu, unzipped, guests, tmp_path, shift, h):
    transcript = tmp_path / "console.txt"
    qemu = Instance(fmu, unzipped, guest_image=str(guests / "x86-poweroff.elf"),
                    machine="pc", qemu_system="x86_64", icount_shift=shift,
                    console_file=str(transcript))
    qemu.start()
    t, k = 0.0, 0
    with pytest.raises(FMICallException) as failure:
        while k < 100_000:
            qemu.slave.doStep(t, h)
            k += 1
            t = k * h
    assert failure.value.status == DISCARD
    log = qemu.log_text()
    assert re.search(rf"QEMU ended during the step at t={t:g} s: .*"
                     r"\(the guest powered off\)", log), log
    # The last line, printed just before power-off, in the log and the
    # transcript, stamped with the end of the step it was printed in.
    stamp = f"{t + h:.6f}"
    assert f"[{stamp}] powering off" in log, log
    lines = transcript.read_text().splitlines()
    assert [line.split("] ")[1] for line in lines] == ["bye", "powering off"]
    assert lines[-1].strip().startswith(f"[{t + h:12.6f}]".strip())
    assert qemu.get("console").endswith("powering off\n")
    assert not qemu_children()
