"""qemu.fmu's pythonfmu entry point: QEMU with the embedded default guest.

All the behaviour is in qemufmu.slave.  pythonfmu's builder finds the model
class by the text `class NAME(Fmi2Slave):`, hence the alias; the FMU's
loader (fmu_src/loader/bridge.c) then finds it by its Fmi2Slave base.
"""

from qemufmu.slave import QemuSlave as Fmi2Slave


class Qemu(Fmi2Slave):
    """QEMU paced by the master over the qqq protocol."""

    def __init__(self, **kwargs) -> None:
        # A function defined here keeps this module's namespace referenced;
        # see qemufmu.slave._keep_module_namespace for why that matters.
        super().__init__(**kwargs)
