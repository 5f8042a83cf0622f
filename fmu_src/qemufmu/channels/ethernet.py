"""Ethernet ports: a guest NIC's frames as FMU String variables.

A port P is a NIC of the guest (``P_nic``, ``P_mac``) behind QEMU's
``-netdev qqq``: the frames the guest sent in a step, with their send times,
come out in ``P_out``; frames set in ``P_in`` reach the NIC at their
delivery times, in the encoding of qemufmu/ethernet.py (simulation time in
ns).  docs/network.md has the variables; protocol version 3 carries the
frames as records of QEMU virtual time, which this file maps both ways.

A frame due beyond the current step waits here (and in the FMU state)
until the step that contains it, and counts as an event for
``next_event_time``; one due before the step's start is late: QEMU hands
it over at the start, and ``P_late`` counts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pythonfmu.enums import Fmi2Status

from ..config import ConfigError
from ..ethernet import Frame, FrameError, decode, default_mac, encode, parse_mac
from ..protocol import pack_net, unpack_net
from .base import Channel, Launch, Step, Var

#: Largest frame a port passes, either way: Ethernet II at the standard
#: 1500-byte MTU, without FCS.  Larger ones are dropped and counted.
MTU_FRAME = 1514
#: Frame bytes one port hands the guest in one step (the whole advance,
#: every channel's input, must stay within the protocol's 16 MiB); frames
#: due beyond it are dropped and counted.
STEP_BYTES_MAX = 1024 * 1024
#: NIC models a port can be, and how QEMU attaches each to the netdev
NICS = {
    # the LAN9118 built into mps2-an385 (and other MPS2 boards)
    "lan9118": "-net nic,netdev={id},model=lan9118,macaddr={mac}",
    # PCI cards for x86 pc; our QEMU ships no option ROMs, hence romfile=
    "e1000": "-device e1000,netdev={id},mac={mac},romfile=",
    # virtio-net repeats only when the queue notification is handled in the
    # vCPU's own write and transmission runs on a virtual-clock timer, not in
    # the main loop at host time (docs/linux-guests.md, "Which NIC")
    "virtio-net-pci": "-device virtio-net-pci,netdev={id},mac={mac},"
                      "ioeventfd=off,tx=timer,romfile=",
}
#: a port's name: it prefixes its variables and names its netdev
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: where a --config FMU's ports are listed among its resources
RESOURCE = "ethernet.json"
#: qemu.fmu's ports (an FMU without ethernet.json)
DEFAULT_PORTS = ("eth0", "eth1")
COUNTERS = {
    "frames_out": "Frames the guest sent so far",
    "bytes_out": "Bytes of the frames the guest sent so far",
    "frames_in": "Frames delivered to the guest so far",
    "bytes_in": "Bytes of the frames delivered to the guest so far",
    "late": "Frames delivered after their time (at the start of the step)",
    "dropped": f"Frames refused: over {MTU_FRAME} bytes, or beyond "
               f"{STEP_BYTES_MAX} bytes in one step",
}


@dataclass
class PortSpec:
    """One port as a configuration declares it."""

    name: str
    nic: str = ""       # the default of P_nic: "" unused
    mac: str = ""       # the default of P_mac: "" derived


def load_specs(resources: Path) -> list[PortSpec]:
    """The ports of the FMU whose resources are ``resources``."""
    path = resources / RESOURCE
    if not path.exists():
        return [PortSpec(name) for name in DEFAULT_PORTS]
    return [PortSpec(**entry) for entry in json.loads(path.read_text())]


def specs_to_json(specs: list[PortSpec]) -> str:
    return json.dumps([asdict(s) for s in specs], indent=1)


def port_variables(name: str, nic: str = "", mac: str = "") -> list[Var]:
    return [
        Var("String", f"{name}_nic", f"NIC model of port {name}: "
            f"{', '.join(NICS)}; empty: unused", "parameter", nic),
        Var("String", f"{name}_mac", f"MAC address of port {name}; empty: "
            "derived from the instance name", "parameter", mac),
        Var("String", f"{name}_out", "Frames the guest sent during the last "
            "step, '<time_ns> <base64>' lines", "output", ""),
        Var("String", f"{name}_in", "Frames to deliver to the guest, "
            "'<time_ns> <base64>' lines", "input", ""),
        *(Var("Integer", f"{name}_{counter}", text, "output", 0)
          for counter, text in COUNTERS.items()),
    ]


def ports_from_config(config: dict, taken: set[str]) -> list[PortSpec]:
    """The [[ethernet]] tables of a --config TOML; ValueError says what is
    wrong.  ``taken``: names the FMU's variables and wires already use."""
    specs: list[PortSpec] = []
    used = set(taken)
    for i, entry in enumerate(config.get("ethernet", [])):
        where = f"[[ethernet]] #{i + 1}"
        unknown = set(entry) - {"name", "nic", "mac"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        spec = PortSpec(entry.get("name", ""), entry.get("nic", ""),
                        entry.get("mac", ""))
        if not all(isinstance(v, str) for v in asdict(spec).values()):
            raise ValueError(f"{where}: name, nic and mac are strings")
        if not NAME.fullmatch(spec.name):
            raise ValueError(f"{where}: name {spec.name!r} must match {NAME.pattern}")
        names = {spec.name} | {v.name for v in port_variables(spec.name)}
        if names & used:
            raise ValueError(f"{where}: name {spec.name!r} is already used "
                             f"({', '.join(sorted(names & used))})")
        used |= names
        if spec.nic and spec.nic not in NICS:
            raise ValueError(f"{where}: nic {spec.nic!r} is not one of "
                             f"{', '.join(NICS)}")
        if spec.mac:
            try:
                parse_mac(spec.mac)
            except ValueError as e:
                raise ValueError(f"{where}: mac: {e}") from None
        specs.append(spec)
    return specs


class EthernetPort(Channel):
    """One Ethernet port: a guest NIC on a qqq network channel."""

    kind = "net"

    def __init__(self, spec: PortSpec, index: int) -> None:
        super().__init__(spec.name, port_variables(spec.name, spec.nic, spec.mac))
        #: the port's number, for its default MAC address
        self.index = index
        self._held: list[Frame] = []    # frames for later steps, time order
        self._sent = ""                 # P_in as last taken
        self._decoded: tuple[str, list[Frame]] = ("", [])

    def _var(self, what: str) -> str:
        return f"{self.name}_{what}"

    def wire(self, params: Mapping[str, object]) -> str | None:
        return self.name if params[self._var("nic")] else None

    def qemu_args(self, launch: Launch) -> list[str]:
        nic = launch.params[self._var("nic")]
        if nic not in NICS:
            raise ConfigError(f"{self._var('nic')} {nic!r} is not one of "
                              f"{', '.join(NICS)} (parameter {self._var('nic')})")
        mac = launch.params[self._var("mac")] or default_mac(launch.instance,
                                                             self.index)
        try:
            parse_mac(mac)
        except ValueError as e:
            raise ConfigError(f"{e} (parameter {self._var('mac')})") from None
        return ["-netdev", f"qqq,id={self.name}",
                *NICS[nic].format(id=self.name, mac=mac).split(" ", 1)]

    def refuse(self, name: str, value: object) -> str | None:
        if name != self._var("in"):
            return None
        try:
            self._decoded = (value, decode(value))
        except FrameError as e:
            return f"port {self.name}: {name} does not decode: {e}"
        return None

    def open(self, launch: Launch, saved: dict | None = None) -> None:
        self._held, self._sent = [], ""
        super().open(launch, saved)

    def send(self, step: Step) -> bytes:
        text = self.values[self._var("in")]
        if text != self._sent:      # a new value: new frames (like console_in)
            self._sent = text
            frames = (self._decoded[1] if self._decoded[0] == text
                      else decode(text))
            self._held = sorted(self._held + self._fit(frames, step, "to deliver"),
                                key=lambda f: f.time_ns)
        base = _base_ns(step)
        due = [f for f in self._held if f.time_ns - base < step.end_ns]
        self._held = self._held[len(due):]
        records, size = [], 0
        for frame in due:
            size += len(frame.data)
            if size > STEP_BYTES_MAX:
                self._drop(step, f"a frame due at {frame.time_ns} ns: more than "
                                 f"{STEP_BYTES_MAX} bytes due in one step")
                continue
            at = frame.time_ns - base
            if at < step.start_ns:
                self._count("late", 1)
                at = step.start_ns
            records.append((at, frame.data))
            self._count("frames_in", 1)
            self._count("bytes_in", len(frame.data))
        return pack_net(records)

    def receive(self, data: bytes, step: Step) -> None:
        base = _base_ns(step)
        frames = self._fit([Frame(base + t, f) for t, f in unpack_net(data)],
                           step, "the guest sent")
        self.values[self._var("out")] = encode(frames)
        self._count("frames_out", len(frames))
        self._count("bytes_out", sum(len(f.data) for f in frames))

    def next_event_ns(self, step: Step) -> int | None:
        return self._held[0].time_ns - _base_ns(step) if self._held else None

    def _fit(self, frames: list[Frame], step: Step, what: str) -> list[Frame]:
        """``frames`` without those over the MTU, which are counted dropped."""
        for f in frames:
            if len(f.data) > MTU_FRAME:
                self._drop(step, f"a frame of {len(f.data)} bytes {what} at "
                                 f"{f.time_ns} ns, over {MTU_FRAME}")
        return [f for f in frames if len(f.data) <= MTU_FRAME]

    def _drop(self, step: Step, why: str) -> None:
        self._count("dropped", 1)
        step.log(f"port {self.name}: dropped {why}", Fmi2Status.warning)

    def _count(self, counter: str, n: int) -> None:
        self.values[self._var(counter)] += n

    def save(self) -> dict:
        return {"sent": self._sent, "held": encode(self._held)}

    def load(self, saved: dict) -> None:
        self._sent = saved["sent"]
        self._held = decode(saved["held"])


def _base_ns(step: Step) -> int:
    """Simulation time (ns) at QEMU time 0: the port encoding's time is
    simulation time, the wire's QEMU virtual time since start."""
    return round(step.clock.start_time * 1e9)
