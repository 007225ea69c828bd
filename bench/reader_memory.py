"""Peak memory of the clinical readers at their bounds: for each format, the largest legal record (``MAX_SAMPLES``
samples in each of its leads; SCP-ECG: the most its uncompressed rhythm section can hold) and the worst hostile file
the pre-parse bounds still let through (XML: every lead's text run just under ``MAX_TEXT_BYTES``, filled with the
shortest samples, ``"1 "``, so that it decodes to as many values as possible), each read in a fresh process
(``parse_file`` + ``to_signal``, as the reader does). Reports the file size, the peak RSS above the process's
baseline (the libraries imported), the ratio to the largest legal record in float32 (12 × MAX_SAMPLES × 4 bytes)
and whether it was read or refused.

    python bench/reader_memory.py --work /tmp/reader_memory

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import base64
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from dataloader.clinical import MAX_TEXT_BYTES
from utils.bounds import MAX_SAMPLES
from utils.paths import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from test_clinical import aecg_xml, muse_xml, philips_xml, write_dicom, write_edf, write_scp  # noqa: E402  (the tests' writers)

RECORD_BYTES = 12 * MAX_SAMPLES * 4  # the largest legal record in float32
# the peak is VmHWM (reset by exec, unlike ru_maxrss, which a child inherits from its parent's peak)
MEASURE = """
import sys
from dataloader.clinical import _parsers, parse_file, to_signal
from utils.errors import RecordError
def peak():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
_parsers()
base = peak()
try:
    to_signal(parse_file(sys.argv[1], sys.argv[2]), sys.argv[1])
    outcome = "read"
except RecordError as exc:
    outcome = "refused: " + exc.reason[:80]
print((peak() - base) / 1024, outcome)
"""


def legal_signal(samples: int) -> np.ndarray:
    t = np.arange(samples) / 500.0
    return np.stack([np.sin(2 * np.pi * 1.2 * t + k) for k in range(12)]).astype(np.float32)  # ±1 mV


def replace_texts(document: str, start_tag: str, end_tag: str, text: str) -> str:
    """Every ``start_tag``…``end_tag`` element's text replaced by ``text``."""
    parts, position = [], 0
    while (start := document.find(start_tag, position)) >= 0:
        start += len(start_tag)
        end = document.index(end_tag, start)
        parts += [document[position:start], text]
        position = end
    return "".join(parts) + document[position:]


def files(work: Path, quick: bool = False) -> dict[str, tuple[Path, str]]:
    """name → (file, format); ``quick``: 10-s legal records only (a smoke test)."""
    work.mkdir(parents=True, exist_ok=True)
    legal = legal_signal(5000 if quick else MAX_SAMPLES // 1000 * 1000)  # whole seconds (EDF's 1-s data records)
    small = legal_signal(500)
    out = {"dicom (legal)": (write_dicom(work / "legal.dcm", legal, 500.0), "dicom"),
           "edf (legal)": (write_edf(work / "legal.edf", legal, 500.0), "edf"),
           "scp (legal, 32767 samples)": (write_scp(work / "legal.scp", legal[:, :32767], 500.0), "scp")}
    for name, writer in (("muse", muse_xml), ("aecg", aecg_xml), ("philips", philips_xml)):
        path = work / f"legal_{name}.xml"
        path.write_bytes(writer(legal, 500.0))
        out[f"{name} (legal)"] = (path, name)
    if quick:
        return out
    ones = ("1 " * (MAX_TEXT_BYTES["aecg"] // 2 - 8)).strip()
    path = work / "hostile_aecg.xml"
    path.write_text(replace_texts(aecg_xml(small, 500.0).decode(), "<digits>", "</digits>", ones))
    out["aecg (hostile: 12 leads of 6.3 M one-digit samples)"] = (path, "aecg")
    longest = " ".join(["12345678901"] * (MAX_SAMPLES // 1000 * 1000))  # as many values as allowed, each as long
    path = work / "hostile_aecg_long_values.xml"
    path.write_text(replace_texts(aecg_xml(small, 500.0).decode(), "<digits>", "</digits>", longest))
    out["aecg (hostile: 12 leads of 1.05 M 11-digit samples)"] = (path, "aecg")
    zeros = base64.b64encode(b"\0" * (MAX_TEXT_BYTES["muse"] // 4 * 3 - 16)).decode()
    path = work / "hostile_muse.xml"
    path.write_text(replace_texts(muse_xml(small, 500.0).decode("latin-1"), "<WaveFormData>", "</WaveFormData>",
                                  zeros), encoding="latin-1")
    out["muse (hostile: 8 leads of base64 at the bound)"] = (path, "muse")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/reader_memory", help="folder for the generated files (~0.5 GB)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 10-s legal records, no hostile files")
    args = p.parse_args(argv)
    rows = []
    for name, (path, fmt) in files(Path(args.work), args.quick).items():
        done = subprocess.run([sys.executable, "-c", MEASURE, str(path), fmt], capture_output=True, text=True,
                              cwd=ROOT, check=True)
        peak, outcome = done.stdout.strip().split(" ", 1)
        rows.append({"file": name, "mib": round(path.stat().st_size / 2 ** 20, 1), "peak_mib": round(float(peak)),
                     "x_record": round(float(peak) * 2 ** 20 / RECORD_BYTES, 1), "outcome": outcome})
        print(f"{name:55s} {rows[-1]['mib']:7.1f} MiB file  peak +{rows[-1]['peak_mib']:5d} MiB "
              f"({rows[-1]['x_record']:4.1f}× the largest record)  {outcome}", flush=True)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "record_mib": RECORD_BYTES / 2 ** 20,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
