"""The network FMU's model: links and switches between Ethernet ports.

Plain Python, no FMI; ``fmu_src/network_slave.py`` ties it to pythonfmu.

- ``forwarding``: which output ports a frame goes to (hub or learning
  switch).
- ``link``: timing (delay, serialization, queueing), loss and queue limits;
  turns the frames that came in during a step into the frames each port
  delivers, with their delivery times.
- ``capture``: the pcapng capture in simulation time (written by dpkt).

See docs/network.md, "The network FMU".
"""
