"""Network throughput: Ethernet frames per wall second through a paced guest,
against the same frames over a local socket pair, measured in the same run.

Run from the repository root (needs `make qemu firmware`):

    .venv/bin/python benchmarks/network_throughput.py           # full run
    .venv/bin/python benchmarks/network_throughput.py --quick   # smoke run

Rows (one Markdown table on stdout, progress on stderr):

* baseline: a Python process sends each UDP echo frame, length-prefixed, to
  a Python echo process over a socket pair and reads it back: the cheapest
  way to move these frames between two processes, in frames per second
  (both directions counted);
* qqq: the Cortex-M UDP node (firmware/arm/udp_node.c) on its LAN9118 behind
  ``-netdev qqq``, paced over protocol version 3 in 1 ms steps; each step
  delivers ``--per-step`` UDP echo requests spread over the step, and the
  node's answers come back with the same step's reply (frames in plus
  frames out per wall second);
* FMU + network FMU: the same node as dist/UdpNode.fmu and dist/Network.fmu
  (2 ms delay, so every frame is on time) under fmpy's FMU2Slave in a
  Jacobi loop of 1 ms steps, the requests entering the network's port 0 as
  port strings and the answers leaving it (frames in plus frames out of
  the guest per wall second);
* idle steps: the same guest, 1 ms steps without frames, with its NIC on a
  qqq netdev (version 3) and on an unconnected hub port (version 2): what
  a network port costs a step that carries nothing.

Every answer is checked (an echo of its request, in order); a missing one
stops the run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fmu_src"))

from qemufmu.process import QemuProcess  # noqa: E402
from qemufmu.protocol import pack_net, unpack_net  # noqa: E402

MS = 1_000_000
NODE_MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")
NODE_IP, PEER_IP = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
TIMEOUT = 60.0


def udp_echo_request(seq: int, size: int) -> bytes:
    import dpkt

    payload = seq.to_bytes(4, "big") * (size // 4)
    udp = dpkt.udp.UDP(sport=40000, dport=7, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=PEER_IP, dst=NODE_IP, p=17, ttl=64, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(dst=NODE_MAC, src=PEER_MAC,
                                        type=0x0800, data=ip))


def arp_request() -> bytes:
    body = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + PEER_MAC + PEER_IP \
        + bytes(6) + NODE_IP
    return b"\xff" * 6 + PEER_MAC + b"\x08\x06" + body


def baseline(frames: list[bytes]) -> float:
    """Frames per second, both ways, through a Python echo process."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            while header := theirs.recv(4, socket.MSG_WAITALL):
                (size,) = struct.unpack(">I", header)
                theirs.sendall(header + theirs.recv(size, socket.MSG_WAITALL))
        finally:
            os._exit(0)
    theirs.close()
    start = time.perf_counter()
    for frame in frames:
        ours.sendall(struct.pack(">I", len(frame)) + frame)
        (size,) = struct.unpack(">I", ours.recv(4, socket.MSG_WAITALL))
        if ours.recv(size, socket.MSG_WAITALL) != frame:
            raise SystemExit("network_throughput.py: the echo process garbled a frame")
    elapsed = time.perf_counter() - start
    ours.close()
    os.waitpid(pid, 0)
    return 2 * len(frames) / elapsed


def node_argv(net: bool) -> list[str]:
    qemu = REPO / "build" / "qemu" / "bin" / "qemu-system-arm"
    image = REPO / "firmware" / "build" / "arm-udp_node.elf"
    for path in (qemu, image):
        if not path.exists():
            raise SystemExit(f"network_throughput.py: {path} missing; run "
                             "`make qemu firmware`")
    # The same NIC either way; without qqq it sits on an unconnected hub.
    backend = "qqq,id=eth0" if net else "hubport,id=eth0,hubid=0"
    nic = ["-netdev", backend, "-net",
           f"nic,netdev=eth0,model=lan9118,macaddr={NODE_MAC.hex(':')}"]
    return [str(qemu), "-M", "mps2-an385", "-nodefaults", "-display", "none",
            "-kernel", str(image), "-icount", "shift=0,sleep=off",
            "-rtc", "clock=vm", *nic]


def paced(steps: int, per_step: int, size: int) -> float:
    """Frames per second (in and out) through the paced node."""
    with QemuProcess(node_argv(True), version=3) as qemu:
        ch = qemu.channel
        ch.hello(timeout=TIMEOUT)
        now = ch.advance(MS, {0: pack_net([(0, arp_request())])},
                         timeout=TIMEOUT).elapsed_ns
        seq, frames = 0, 0
        start = time.perf_counter()
        for _ in range(steps):
            batch = []
            for i in range(per_step):
                batch.append((now + i * MS // per_step, udp_echo_request(seq, size)))
                seq += 1
            reply = ch.advance(MS, {0: pack_net(batch)}, timeout=TIMEOUT)
            out = unpack_net(reply.outputs.get(0, b""))
            if len(out) != per_step:
                raise SystemExit(f"network_throughput.py: {len(out)} answers to "
                                 f"{per_step} requests in a step")
            frames += 2 * per_step
            now += reply.elapsed_ns
        return frames / (time.perf_counter() - start)


def fmu_path(steps: int, per_step: int, size: int) -> float:
    """Frames per second (in and out of the guest) through UdpNode.fmu and
    Network.fmu under fmpy, in a Jacobi loop written out here."""
    import shutil
    import tempfile

    from fmpy import extract, read_model_description
    from fmpy.fmi2 import FMU2Slave

    from qemufmu.ethernet import Frame, decode, encode

    def open_fmu(path: Path, name: str):
        if not path.exists():
            raise SystemExit(f"network_throughput.py: {path} missing; run "
                             "`make network`")
        md = read_model_description(str(path))
        unzipped = extract(str(path), str(Path(tmp) / name))
        fmu = FMU2Slave(guid=md.guid, unzipDirectory=unzipped, instanceName=name,
                        modelIdentifier=md.coSimulation.modelIdentifier)
        fmu.instantiate()
        fmu.setupExperiment(startTime=0.0)
        return fmu, {v.name: v.valueReference for v in md.modelVariables}

    tmp = tempfile.mkdtemp()
    try:
        node, nv = open_fmu(REPO / "dist" / "UdpNode.fmu", "node")
        net, tv = open_fmu(REPO / "dist" / "Network.fmu", "net")
        node.setString([nv["eth0_mac"]], [NODE_MAC.hex(":")])
        net.setReal([tv["delay"]], [0.002])
        for fmu in (node, net):
            fmu.enterInitializationMode()
            fmu.exitInitializationMode()
        h, seq, answers = 1e-3, 0, 0
        to_node = from_node = ""
        start = time.perf_counter()
        for k in range(steps):
            t = k * h
            batch = [Frame(0, arp_request())] if k == 0 else []
            for i in range(per_step if k else 0):
                batch.append(Frame(round((t + i * h / per_step) * 1e9),
                                   udp_echo_request(seq, size)))
                seq += 1
            net.setString([tv["port0_in"], tv["port1_in"]],
                          [encode(batch), from_node])
            node.setString([nv["eth0_in"]], [to_node])
            node.doStep(t, h)
            net.doStep(t, h)
            from_node = node.getString([nv["eth0_out"]])[0].decode()
            to_node = net.getString([tv["port1_out"]])[0].decode()
            answers += len(decode(net.getString([tv["port0_out"]])[0].decode()))
        elapsed = time.perf_counter() - start
        if answers < per_step * (steps - 6):
            raise SystemExit(f"network_throughput.py: {answers} answers to "
                             f"{seq} requests through the FMUs")
        for fmu in (node, net):
            fmu.terminate()
            fmu.freeInstance()
        return 2 * answers / elapsed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def idle_step_us(net: bool, steps: int) -> float:
    with QemuProcess(node_argv(net), version=3 if net else 2) as qemu:
        ch = qemu.channel
        ch.hello(timeout=TIMEOUT)
        for _ in range(100):
            ch.advance(MS, timeout=TIMEOUT)
        start = time.perf_counter()
        for _ in range(steps):
            ch.advance(MS, timeout=TIMEOUT)
        return (time.perf_counter() - start) / steps * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--per-step", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="UDP payload bytes")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="200 steps, 1 rep")
    args = p.parse_args()
    if args.quick:
        args.steps, args.reps = 200, 1
    frames = [udp_echo_request(i, args.size) for i in range(args.steps * args.per_step)]
    base, qqq, fmus, idle_net, idle_plain = [], [], [], [], []
    for rep in range(args.reps):
        print(f"rep {rep + 1}/{args.reps}", file=sys.stderr)
        base.append(baseline(frames))
        qqq.append(paced(args.steps, args.per_step, args.size))
        fmus.append(fmu_path(args.steps, args.per_step, args.size))
        idle_net.append(idle_step_us(True, args.steps))
        idle_plain.append(idle_step_us(False, args.steps))
    b, q, f = (statistics.median(x) for x in (base, qqq, fmus))
    n, i = statistics.median(idle_net), statistics.median(idle_plain)
    frame_bytes = len(frames[0])
    print(f"| path ({frame_bytes}-byte frames, {args.per_step} requests per 1 ms "
          "step, medians of {args.reps}) | figure | ratio |".replace(
              "{args.reps}", str(args.reps)))
    print("|---|---|---|")
    print(f"| baseline: Python echo over a socket pair | {b:,.0f} frames/s | 1 |")
    print(f"| qqq v3: UDP echo by the paced Cortex-M node | {q:,.0f} frames/s | "
          f"{q / b:.2f} of baseline |")
    print(f"| UdpNode.fmu + Network.fmu under fmpy | {f:,.0f} frames/s | "
          f"{f / b:.2f} of baseline |")
    print(f"| idle 1 ms step, NIC on -netdev qqq (v3) | {n:.1f} us | "
          f"{n / i:.2f} of no qqq netdev |")
    print(f"| idle 1 ms step, NIC on a hub port (v2) | {i:.1f} us | 1 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
