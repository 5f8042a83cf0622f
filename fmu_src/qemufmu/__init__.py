"""qemu-fmu: QEMU as an FMI 2.0 co-simulation FMU, paced over the qqq protocol.

Modules, lowest first:

- ``protocol``: the simulator's end of the qqq socket, base protocol and
  version 2 (advances, replies, lookahead, channel data).
- ``process``: starting, watching and reaping one QEMU child.
- ``clock``: turning the master's absolute time into advances.
- ``console``: cutting channel bytes into lines stamped with step times.
- ``signals``: typed FMU variables as ``name=value`` lines.
- ``config``: the FMU's parameters, validated, and the QEMU command line.
- ``slave``: the pythonfmu slave that ties them to fmi2DoStep.

Sweeps (``qemu-fmu sweep``, docs/sweeps.md), never imported by the slave:

- ``system``: an SSP's or FMU's components, variables and connections.
- ``cases``: the CASES table, typed and checked.
- ``cosim``: one case under fmpy, failures kept in its result.
- ``sweep``: cases on Dask workers, results as pandas/Parquet.
- ``cli``: the ``qemu-fmu`` command.
"""
