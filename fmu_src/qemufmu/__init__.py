"""qemu-fmu: QEMU as an FMI 2.0 co-simulation FMU, paced over the qqq protocol.

Layers, lowest first:

- ``protocol``: the simulator's end of the qqq socket (advances and replies).
- ``process``: starting, watching and reaping one QEMU child.
- ``clock``: turning the master's absolute time into advances.
"""
