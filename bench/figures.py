"""The 12-lead figure of report.html: this project's matplotlib printout against ecg-plot (an SVG-first library made
for ECG charts), on the same real records — correctness (paper speed, gain, lead layout, the attribution shading)
and page size.

    python bench/figures.py --records 6              # the first 6 CinC records
    python bench/figures.py --quick                  # a smoke run: 2 records

For each record: ours as explanations write it (PNG at ECG_DPI) and as report.html embeds it (a 256-colour
palette), and ecg-plot's 12-lead layout with a lead II rhythm strip as SVG and as PNG at the same DPI, with the
render time of each. Scale is read from each figure's own geometry: millimetres per second of a panel and per
millivolt of the trace. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from dataloader.formats import open_reader
from dataloader.records import LEADS
from engine.report.page import ecg_uri
from utils.machine import cpu_name
from utils.paths import ROOT
from utils.plots import ECG_DPI, MM_PER_MV, MM_PER_S, ecg_figure, save_figure

SHARED = ROOT.parent / "shared" / "data" / "cinc2021"


def ours(record, attribution: np.ndarray, folder: Path) -> dict:
    started = time.perf_counter()
    figure = ecg_figure(record.signal, record.fs, LEADS, attribution, record.id, attribution.sum(axis=1))
    path = save_figure(folder / f"{record.id}.png", figure, dpi=ECG_DPI, tight=False)
    seconds = time.perf_counter() - started
    panel = figure.axes[0]  # lead I: 2.5 s
    width_mm = panel.get_position().width * figure.get_figwidth() * 25.4
    height_mm = panel.get_position().height * figure.get_figheight() * 25.4
    low, high = panel.get_ylim()
    left, right = panel.get_xlim()
    return {"png_kb": path.stat().st_size / 1024, "embedded_kb": len(ecg_uri(path)) * 3 / 4 / 1024,
            "seconds": seconds, "mm_per_s": width_mm / (right - left), "mm_per_mv": height_mm / (high - low),
            "layout": "3×4 (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6) + II rhythm strip",
            "attribution": "continuous shading per lead and time"}


def ecg_plot_figure(record, folder: Path) -> dict:
    import ecg_plot

    started = time.perf_counter()
    chart = ecg_plot.plot(record.signal[:, :int(10 * record.fs)], sample_rate=record.fs, lead_names=list(LEADS),
                          layout="12lead", time_mode="sequential", rhythm_lead="II", speed=MM_PER_S, gain=MM_PER_MV,
                          title=record.id)
    svg = chart.to_svg()
    svg_seconds = time.perf_counter() - started
    png = folder / f"{record.id}_ecg_plot.png"
    figure, _ = chart.to_matplotlib()  # its PNG export needs Cairo; its own Matplotlib rendering of the same scene
    figure.savefig(png, dpi=ECG_DPI)
    panel = chart.panels[0]
    return {"svg_kb": len(svg.encode()) / 1024, "png_kb": png.stat().st_size / 1024, "seconds": svg_seconds,
            "mm_per_s": panel.width / (panel.end - panel.start), "mm_per_mv": chart.gain,
            "layout": "4×3 columns (I II III / aVR aVL aVF / V1 V2 V3 / V4 V5 V6) + II rhythm strip",
            "attribution": "interval annotations only (no per-sample shading)"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=6)
    p.add_argument("--input", default=str(SHARED))
    p.add_argument("--work", default="bench/results/figures")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 records")
    args = p.parse_args(argv)
    folder = Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    reader = open_reader(args.input)
    rows = []
    for i in range(2 if args.quick else args.records):
        record = reader.load(i)
        attribution = np.abs(np.gradient(record.signal, axis=-1))  # a stand-in with the shape of a real one
        rows.append({"id": record.id, "ours": ours(record, attribution, folder),
                     "ecg_plot": ecg_plot_figure(record, folder)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    def mean(library: str, key: str) -> float:
        return float(np.mean([r[library][key] for r in rows]))

    result = {"cpu": cpu_name(), "records": len(rows), "dpi": ECG_DPI,
              "ours": {k: mean("ours", k) for k in ("png_kb", "embedded_kb", "seconds", "mm_per_s", "mm_per_mv")},
              "ecg_plot": {k: mean("ecg_plot", k) for k in ("svg_kb", "png_kb", "seconds", "mm_per_s", "mm_per_mv")},
              "rows": rows}
    out = io.StringIO()
    json.dump(result, out)
    (folder / "figures.json").write_text(out.getvalue())
    print(out.getvalue())
    return result


if __name__ == "__main__":
    main()
