#!/usr/bin/env python3
"""Guests on a network: the SSP systems of examples/network/build.py, run.

Each system runs under our Jacobi master (qemufmu.cosim, what `qemu-fmu
sweep` uses) with 1 ms communication steps until its stop time or until a
guest powers off when its job is done.  The network FMU writes a pcapng
capture stamped with simulation time, each guest's console goes to a
transcript, both under --out; the demo prints what the guests said and,
for the ping, the round trip the capture shows against the modelled one.

    .venv/bin/python examples/network/demo.py                 # all systems
    .venv/bin/python examples/network/demo.py net_ping        # one of them
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "fmu_src"))

from qemufmu import cosim  # noqa: E402
from qemufmu.cases import Case  # noqa: E402
from qemufmu.network.link import serialization_ns  # noqa: E402
from qemufmu.system import read_system  # noqa: E402

#: system -> (stop time in s, console lines worth showing)
SYSTEMS = {
    "net_udp_pair": (0.1, r"reply|echo"),
    "net_udp_linux": (4.0, r"reply|udp-echo:|eth0 .* up"),
    "net_ping": (7.0, r"bytes from|round-trip|packets|eth0 .* up"),
    "net_tcp": (8.0, r"\] tcp-(send|recv): |eth0 .* up"),
}
STEP = 1e-3
#: console lines shown per component: the first and the last ones
SHOWN = 6


def run(name: str, out: Path) -> cosim.CaseResult:
    ssp = REPO / "dist" / f"{name}.ssp"
    if not ssp.exists():
        raise SystemExit(f"demo.py: {ssp} missing; run `make network`")
    system = read_system(ssp)
    ecus = [c for c in system.components if c != "net"]
    out.mkdir(parents=True, exist_ok=True)
    starts = [("net.capture_file", str(out / f"{name}.pcapng"))]
    starts += [(f"{c}.console_file", str(out / f"{name}.{c}.txt")) for c in ecus]
    record = tuple(f"{c}.eth0_{k}" for c in ecus for k in ("frames_out", "late"))
    settings = cosim.Settings(SYSTEMS[name][0], STEP, record, end_on_discard=True)
    return cosim.run_case(system, ssp, cosim.digest_of(ssp),
                          Case(name, tuple(starts)), settings)


def ping_round_trip(capture: Path, delay_s: float, bit_rate: float) -> str:
    """The modelled and the captured round trip of the last echo."""
    rows = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "icmp", "-T", "fields",
         "-e", "frame.time_epoch", "-e", "frame.interface_id", "-e", "icmp.type",
         "-e", "frame.len"], capture_output=True, text=True, timeout=60,
        check=True).stdout.split("\n")
    fields = [r.split("\t") for r in rows if r]
    # The last request as it left the pinging guest (its own port: 1) and
    # the last reply as it reached it (delivered on port 1).
    request = [f for f in fields if f[1] == "1" and f[2] == "8"][-1]
    reply = [f for f in fields if f[1] == "1" and f[2] == "0"][-1]
    wire = 2 * (round(delay_s * 1e9) + serialization_ns(int(request[3]), bit_rate))
    seen = round((float(reply[0]) - float(request[0])) * 1e9)
    return (f"modelled wire round trip {wire / 1e6:.6f} ms; capture: request "
            f"left at {request[0]} s, reply delivered {seen / 1e6:.6f} ms "
            f"later (the other guest's {(seen - wire) / 1e3:.1f} us of work in it)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # argparse checks a nargs="*" default against the choices too: hence [].
    p.add_argument("systems", nargs="*", choices=[[], *SYSTEMS], default=[],
                   metavar="SYSTEM", help=f"of {', '.join(SYSTEMS)} (default: all)")
    p.add_argument("--out", type=Path, default=REPO / "build" / "network")
    args = p.parse_args()
    failed = 0
    for name in args.systems or SYSTEMS:
        started = time.perf_counter()
        result = run(name, args.out)
        wall = time.perf_counter() - started
        print(f"== {name}: {result.status} at {result.time[-1]:.3f} s of "
              f"simulation, {wall:.1f} s wall"
              + (f" ({result.message})" if result.message else ""))
        failed += result.status != cosim.STATUS_OK
        pattern = re.compile(SYSTEMS[name][1])
        for transcript in sorted(args.out.glob(f"{name}.*.txt")):
            component = transcript.name.split(".")[1]
            lines = [ln for ln in transcript.read_text().splitlines()
                     if pattern.search(ln)]
            if len(lines) > SHOWN:
                lines[SHOWN // 2:-SHOWN // 2] = [f"... {len(lines) - SHOWN} more"]
            for line in lines:
                print(f"   {component}: {line}")
        late = {c: v[-1] for c, v in result.values.items() if c.endswith("late")}
        print(f"   frames late: {late}; capture {args.out / (name + '.pcapng')}")
        if name == "net_ping" and result.status == cosim.STATUS_OK:
            print("   " + ping_round_trip(args.out / f"{name}.pcapng", 0.005, 100e6))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
