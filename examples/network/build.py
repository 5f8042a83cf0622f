#!/usr/bin/env python3
"""Build the network examples: ECU FMUs and SSP systems around dist/Network.fmu.

Writes, into dist/:
- UdpNode.fmu, UdpPair.fmu, UdpClient.fmu: Cortex-M3 firmware with the
  UDP node (firmware/arm/udp_node.c) on the board's LAN9118, as 10.0.0.2
  (server), and as 10.0.0.3 asking 10.0.0.2 or 10.0.0.1 every 10 ms;
- LinuxNode.fmu: the example Linux computer on an e1000 (linux_node.toml);
- net_udp_pair.ssp: UdpPair and UdpNode through the network FMU;
- net_ping.ssp: two Linux computers, one pinging the other;
- net_udp_linux.ssp: the Cortex-M client asking a Linux computer over UDP;
- net_tcp.ssp: a bulk TCP transfer between two Linux computers.

Every link: 5 ms propagation delay and 100 Mbit/s, so that under a Jacobi
master with 1 ms communication steps every frame arrives exactly at its
modelled time (docs/network.md, "Exactness").  Needs `make fmu` (for
dist/Network.fmu) and `make firmware`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DIST = REPO / "dist"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "fmu_src"))

import build_fmu  # noqa: E402
from qemufmu.sspwrite import Element, write_ssp  # noqa: E402

#: the network of every example: delay (s), bit rate (bit/s)
LINK = {"delay": 0.005, "bit_rate": 100e6}
#: the Linux guest's command line (linux_node.toml's default, without role)
LINUX_CMDLINE = "console=ttyS0 cryptomgr.notests tsc=reliable nolapic_timer"


def cabled(a: str, b: str, net: str = "net") -> list[tuple[str, str, str, str]]:
    """a's eth0 on the network's port 0, b's on port 1, both ways."""
    return [(a, "eth0_out", net, "port0_in"), (net, "port0_out", a, "eth0_in"),
            (b, "eth0_out", net, "port1_in"), (net, "port1_out", b, "eth0_in")]


def linux(ip: str, role: str) -> dict[str, object]:
    return {"kernel_cmdline": f"{LINUX_CMDLINE} qemufmu.ip={ip}/24 "
                              f"qemufmu.role={role}"}


def build_all(with_linux: bool = True) -> list[Path]:
    network = DIST / "Network.fmu"
    if not network.exists():
        raise build_fmu.BuildError(f"{network} missing; run `make fmu`")
    node = build_fmu.build(None, HERE / "udp_node.toml")
    pair = build_fmu.build(None, HERE / "udp_pair.toml")
    net = Element(network, dict(LINK))
    out = [node, pair, write_ssp(
        DIST / "net_udp_pair.ssp", "net_udp_pair",
        {"client": Element(pair), "node": Element(node), "net": net},
        cabled("client", "node"), stop_time=0.1)]
    if with_linux:
        lx = build_fmu.build(None, HERE / "linux_node.toml")
        out += [lx, write_ssp(
            DIST / "net_ping.ssp", "net_ping",
            {"server": Element(lx, linux("10.0.0.1", "echo")),
             "client": Element(lx, linux("10.0.0.2", "wait:10.0.0.1,ping:10.0.0.1:3")),
             "net": net},
            cabled("server", "client"), stop_time=7.0)]
        client = build_fmu.build(None, HERE / "udp_client.toml")
        out += [client, write_ssp(
            DIST / "net_udp_linux.ssp", "net_udp_linux",
            {"linux": Element(lx, linux("10.0.0.1", "udp-echo")),
             "ecu": Element(client), "net": net},
            cabled("linux", "ecu"), stop_time=4.0)]
        out.append(write_ssp(
            DIST / "net_tcp.ssp", "net_tcp",
            {"receiver": Element(lx, linux("10.0.0.1", "tcp-recv")),
             "sender": Element(lx, linux("10.0.0.2",
                                         "wait:10.0.0.1,tcp-send:10.0.0.1:1000000")),
             "net": net},
            cabled("receiver", "sender"), stop_time=8.0))
    return out


def main() -> int:
    with_linux = "--no-linux" not in sys.argv[1:]
    try:
        for path in build_all(with_linux):
            print(f"wrote {path.relative_to(REPO)} "
                  f"({path.stat().st_size / 1e6:.1f} MB)")
    except build_fmu.BuildError as e:
        print(f"build.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
