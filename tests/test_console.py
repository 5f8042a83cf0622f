"""The console channel: text decoded across steps, and kept in FMU states.

The line-echo guest sends back what console_in gives it, a few bytes per
1.6 us step (50 instructions at the board's 32 ns, docs/boards.md), so
multi-byte UTF-8 characters are cut between steps.  The
`console` output must still carry every character once and whole.
"""

from __future__ import annotations

from conftest import built
from fmi_helpers import Instance

TEXT = "héllo wörld € 😀\n" * 3
SIZE = len(TEXT.encode())
STEP = 1.6e-6
#: 32 ms of steps: the guest boots in about 3 ms and echoes at once
MAX_STEPS = 20_000


def echo(inst: Instance, first: int, steps: int | None = None) -> list[tuple]:
    """(step, console, console_bytes) after each step from step ``first``,
    for ``steps`` steps or until the whole text is back."""
    rows = []
    k = first
    while (steps is None and (not rows or rows[-1][2] < SIZE) and k < MAX_STEPS
           or steps is not None and len(rows) < steps):
        inst.slave.doStep(k * STEP, STEP)
        rows.append((k, inst.get("console"), inst.get("console_bytes")))
        k += 1
    return rows


def line_echo(fmu, unzipped, guests, name: str = "qemu") -> Instance:
    """The line-echo guest, started, with TEXT waiting in console_in."""
    inst = Instance(fmu, unzipped, name=name,
                    guest_image=built(guests / "arm-lineecho.elf", "make firmware"))
    inst.start()
    inst.set("console_in", TEXT)
    return inst


def split_steps(rows: list[tuple]) -> list[int]:
    """Steps that ended inside a character: more bytes came than were shown."""
    before = [0] + [r[2] for r in rows[:-1]]
    return [k for (k, text, count), prev in zip(rows, before, strict=True)
            if count - prev != len(text.encode())]


def test_a_character_cut_between_steps_comes_whole(fmu, unzipped, guests):
    inst = line_echo(fmu, unzipped, guests)
    rows = echo(inst, 0)
    inst.close()
    assert rows[-1][2] == SIZE, "the guest did not echo the whole text"
    assert len(split_steps(rows)) >= 3, "no character was cut: the test tests nothing"
    assert not any("\ufffd" in text for _, text, _ in rows)
    assert "".join(text for _, text, _ in rows) == TEXT


def test_a_cut_character_survives_a_state_restore(fmu, unzipped, guests):
    inst = line_echo(fmu, unzipped, guests)
    rows = echo(inst, 0)
    cut = split_steps(rows)[0]
    inst.close()

    inst = line_echo(fmu, unzipped, guests, name="again")
    assert echo(inst, 0, cut + 1) == rows[:cut + 1]
    state = inst.slave.getFMUstate()      # a character's first bytes pending
    rest = echo(inst, cut + 1, 40)
    assert "".join(t for _, t, _ in rows[:cut + 1] + rest) == TEXT
    for _ in range(2):
        inst.slave.setFMUstate(state)
        assert echo(inst, cut + 1, 40) == rest
    inst.slave.freeFMUstate(state)
    inst.close()
