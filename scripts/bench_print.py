"""Print benchmark: a 14INX17IN STANDARD\\4,5 film of twenty 512x512 12-bit images.

The same pynetdicom SCU flow (Printer N-GET, Film Session, Film Box, 20 Image Box N-SET,
N-ACTION, N-DELETE, release) runs against the appliance (grayscale, then colour, each in
its own process, printing to a folder at 300 dpi) and against DCMTK dcmprscp (grayscale
only: it stores the job and renders nothing) for the protocol cost. Measured: the flow's
wall time, the N-ACTION round trip, the time from N-ACTION to the document ready for the
printer (the job's ready_at), and the appliance's peak memory (VmHWM of its process).
Prints a Markdown section for docs/benchmarks.md.

    scripts/bench print [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pynetdicom import AE  # noqa: E402

from tests.printscu import (  # noqa: E402
    FILM_BOX,
    FILM_SESSION,
    GRAY_META,
    PRINTER,
    PRINTER_INSTANCE,
    PrintSCU,
    gray_item,
    rgb_item,
)

ENV = {**os.environ, "TCP_NODELAY": "1"}
FORMAT, FILM_SIZE, SIZE = "STANDARD\\4,5", "14INX17IN", 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_dicom(port: int, called: str, timeout: float = 30) -> None:
    """Poll with associations until the listener accepts one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(GRAY_META)  # dcmprscp refuses a Printer-only association
        ae.acse_timeout = 2
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.05)
    raise SystemExit(f"no DICOM listener on port {port}")


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def flow(port: int, called: str, color: bool) -> tuple[float, float, float, str]:
    """One film: (flow wall s, N-ACTION round trip s, N-ACTION start epoch, job uid)."""
    start = time.perf_counter()
    scu = PrintSCU(port, calling="CT1", called=called, color=color)
    assert scu.ok, "association refused"
    item = rgb_item(SIZE, SIZE) if color else gray_item(SIZE, SIZE, bits=12)
    try:
        scu.get(PRINTER, PRINTER_INSTANCE)
        st, session, _ = scu.session()
        assert st == 0, hex(st)
        st, box, reply = scu.film_box(session, FORMAT, FilmSizeID=FILM_SIZE)
        assert st in (0, 0xB605), hex(st)
        for pos, ref in enumerate(reply.ReferencedImageBoxSequence, 1):
            st, _ = scu.image(ref.ReferencedSOPInstanceUID, pos, item)
            assert st == 0, hex(st)
        action_epoch = time.time()
        t0 = time.perf_counter()
        st, reply = scu.action(FILM_BOX, box)
        action = time.perf_counter() - t0
        assert st == 0, hex(st)
        job = ""
        if "ReferencedPrintJobSequence" in reply:
            job = str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID)
        scu.delete(FILM_BOX, box)
        scu.delete(FILM_SESSION, session)
    finally:
        scu.release()
    return time.perf_counter() - start, action, action_epoch, job


def ready_after(db: Path, job: str, since: float, timeout: float = 60) -> tuple[float, int]:
    """Seconds from N-ACTION to the job's document ready, and the job's render time (ms)."""
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT ready_at, render_ms, state, error FROM print_jobs WHERE uid = ?", (job,)
            ).fetchone()
            if row and row[2] == "FAILURE":
                raise SystemExit(f"job failed: {row[3]}")
            if row and row[0]:
                ready = datetime.fromisoformat(row[0].replace("Z", "+00:00")).timestamp()
                return ready - since, int(row[1])
            time.sleep(0.01)
    finally:
        conn.close()
    raise SystemExit("job not ready in time")


def run_appliance(work: Path, color: bool, repeat: int) -> dict[str, float]:
    """Start the appliance in its own process and print `repeat` films to a folder."""
    data = work / ("data-color" if color else "data-gray")
    cfg = work / "appliance.toml"
    cfg.write_text(
        '[[devices]]\nae_title = "CT1"\n'
        f'[[printers]]\nname = "folder"\nuri = "folder:{work / "out"}"\n'
        "[[print_profiles]]\ndpi = 300\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg), "--data-dir", str(data),
         "--host", "127.0.0.1", "--dicom-port", str(port), "--dicom-tls-port", "0", "--web-port", str(free_port()),
         "--only", "dicom", "--log-level", "WARNING"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_dicom(port, "APPLIANCE")
        walls, actions, readies, renders = [], [], [], []
        for _ in range(repeat):
            wall, action, since, job = flow(port, "APPLIANCE", color)
            ready, render_ms = ready_after(data / "appliance.db", job, since)
            walls.append(wall)
            actions.append(action)
            readies.append(ready)
            renders.append(render_ms / 1000)
        peak = vm_hwm(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    med = statistics.median
    return {
        "wall": med(walls),
        "action": med(actions),
        "ready": med(readies),
        "ready_max": max(readies),
        "render": med(renders),
        "peak_mb": peak / 1024,
    }


DCMPRSCP_CFG = """[[GENERAL]]
[PRINT]
Directory = {work}/spool
DetailedLog = false
BinaryLog = false
[DATABASE]
Directory = {work}/database
[LUT]
Directory = {work}/lut
[[COMMUNICATION]]
[BENCHPRINTER]
Aetitle = DCMPRSCP
Description = DCMTK print SCP
Hostname = localhost
Port = {port}
Type = LOCALPRINTER
MaxPDU = 65536
ImplicitOnly = false
DisableNewVRs = false
DisplayFormat = 1,1\\2,2\\4,5
FilmSizeID = 8INX10IN\\14INX17IN
MagnificationType = REPLICATE\\BILINEAR\\CUBIC\\NONE
MaxDensity = 320
MinDensity = 20
MediumType = PAPER\\CLEAR FILM\\BLUE FILM
BorderDensity = BLACK\\WHITE
EmptyImageDensity = BLACK\\WHITE
Supports12Bit = true
SupportsPresentationLUT = true
SupportsImageSize = true
SupportsDecimateCrop = true
SupportsTrim = true
PresentationLUTinFilmSession = false
PresentationLUTMatchRequired = false
OmitSOPClassUIDFromCreateResponse = false
"""


def run_dcmprscp(work: Path, repeat: int) -> dict[str, float]:
    """The same grayscale flow against DCMTK dcmprscp (it stores the job, renders nothing)."""
    work = work / "dcmprscp"
    for sub in ("spool", "database", "lut"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = work / "dcmpstat.cfg"
    cfg.write_text(DCMPRSCP_CFG.format(work=work, port=port))
    proc = subprocess.Popen(
        ["dcmprscp", "-c", str(cfg), "-p", "BENCHPRINTER"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
    )  # fmt: skip
    try:
        wait_dicom(port, "DCMPRSCP")
        walls, actions = [], []
        for _ in range(repeat):
            wall, action, _since, _job = flow(port, "DCMPRSCP", color=False)
            walls.append(wall)
            actions.append(action)
    finally:
        proc.terminate()
        proc.wait(10)
    return {"wall": statistics.median(walls), "action": statistics.median(actions)}


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu or 'unknown CPU'}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="films per mode (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-print-") as tmp:
        work = Path(tmp)
        gray = run_appliance(work, color=False, repeat=args.repeat)
        color = run_appliance(work, color=True, repeat=args.repeat)
        dcmtk = run_dcmprscp(work, args.repeat)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    print(
        f"## Print\n\n{when}; {machine()}. Command: `scripts/bench print --repeat {args.repeat}`."
    )
    print(
        f"A {FILM_SIZE} `{FORMAT}` film of twenty {SIZE}x{SIZE} images (12-bit grey, or RGB), "
        "rendered at 300 dpi to a lossless PDF plus PNG preview (folder printer); medians of "
        f"{args.repeat} films, each appliance mode in a fresh process.\n"
    )
    print(
        "| server | mode | SCU flow wall | N-ACTION round trip | N-ACTION to document ready "
        "(max) | render | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in (("appliance", gray), ("appliance", color)):
        mode = "grey 12-bit" if r is gray else "RGB"
        print(
            f"| {name} | {mode} | {ms(r['wall'])} | {ms(r['action'])} | {ms(r['ready'])} "
            f"({ms(r['ready_max'])}) | {ms(r['render'])} | {r['peak_mb']:.0f} MB |"
        )
    print(f"| DCMTK dcmprscp | grey 12-bit | {ms(dcmtk['wall'])} | {ms(dcmtk['action'])} | "
          "(stores only) | - | - |")  # fmt: skip
    print(
        f"\nRatios (appliance / dcmprscp, grey): SCU flow {gray['wall'] / dcmtk['wall']:.2f}, "
        f"N-ACTION round trip {gray['action'] / dcmtk['action']:.2f}. Targets: document ready "
        f"within 2 s of N-ACTION (grey {gray['ready_max']:.2f} s, colour {color['ready_max']:.2f} s), "
        f"peak memory under 200 MB (grey {gray['peak_mb']:.0f} MB, colour {color['peak_mb']:.0f} MB)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
