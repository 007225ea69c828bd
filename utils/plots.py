"""PNG figures (matplotlib, headless): learning curves and the evaluation report's plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure  # the object API: no GUI backend, no global figure state

from .io import save_figure


def _save(fig, out_png):
    fig.tight_layout()
    save_figure(out_png, fig)
    return Path(out_png)


def plot_scatter(pred, true, out_png, title: str = "predicted vs chronological age"):
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(true, pred, s=8, alpha=0.5)
    lo, hi = float(min(min(true), min(pred))), float(max(max(true), max(pred)))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="identity")
    ax.set(xlabel="chronological age (years)", ylabel="predicted age (years)", title=title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def plot_bland_altman(pred, true, out_png):
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    mean, diff = (pred + true) / 2, pred - true
    bias, spread = diff.mean(), 1.96 * diff.std(ddof=1) if len(diff) > 1 else 0.0
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.scatter(mean, diff, s=8, alpha=0.5)
    ax.axhline(bias, color="black", lw=1, label=f"bias {bias:+.2f}")
    for sign in (-1, 1):
        ax.axhline(bias + sign * spread, color="gray", ls="--", lw=1)
    ax.set(xlabel="mean of predicted and chronological age", ylabel="predicted − chronological (years)",
           title=f"Bland–Altman (limits of agreement ±{spread:.1f} y)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def plot_error_by_bin(bins: list[dict], out_png, unit: str = "years"):
    labels = [f"{b['lo']:g}–{b['hi']:g}" for b in bins]
    fig = Figure(figsize=(max(5, 0.7 * len(bins)), 4))
    ax = fig.subplots()
    ax.bar(labels, [b["mae"] for b in bins], color="tab:blue", label="MAE")
    ax.plot(labels, [b["bias"] for b in bins], color="tab:red", marker="o", label="bias (pred − true)")
    ax.axhline(0, color="black", lw=0.8)
    for i, b in enumerate(bins):
        ax.annotate(f"n={b['n']}", (i, b["mae"]), ha="center", va="bottom", fontsize=7)
    ax.set(xlabel=f"chronological age bin ({unit})", ylabel="years", title="error by age bin")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_png)


def plot_kaplan_meier(curves: dict, out_png, threshold: float = 8.0, grouping: str | None = None):
    colours = {"younger": "tab:green", "reference": "tab:gray", "older": "tab:red"}
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for group, curve in curves.items():
        ax.step(curve["timeline"], curve["survival"], where="post", color=colours[group], label=group)
    ax.set(xlabel="years of follow-up", ylabel="survival",
           title=f"Kaplan–Meier by ECG-age gap ({grouping or f'±{threshold:g} y'})")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def plot_learning_curves(history: pd.DataFrame, out_png: str | Path):
    """Validation MAE, train/valid loss and learning rate per epoch (a run's history: epoch, train_loss,
    valid_loss, valid_mae, lr)."""
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].plot(history["epoch"], history["valid_mae"], marker="o", color="tab:red")
    axes[0].set(title="validation MAE", xlabel="epoch", ylabel="years")
    axes[1].plot(history["epoch"], history["train_loss"], marker="o", label="train")
    axes[1].plot(history["epoch"], history["valid_loss"], marker="o", label="valid")
    axes[1].set(title="loss", xlabel="epoch")
    axes[1].legend()
    axes[2].plot(history["epoch"], history["lr"], marker="o", color="tab:green")
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, out_png)


# ---- the 12-lead ECG, shaded by attribution ----------------------------------------------------------------------
ECG_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))  # 3 × 4 panels
RHYTHM_LEAD = "II"  # the 10-s strip below them
MM_PER_S, MM_PER_MV = 25.0, 10.0  # paper speed and gain of the clinical printout
ROW_MM, MARGIN_MM, TITLE_MM = 40.0, 6.0, 12.0  # a row spans ±2 mV
ECG_SECONDS = 10.0
ECG_DPI = 150


def _window_start(attribution: np.ndarray, fs: float, seconds: float) -> int:
    """First sample of the ``seconds`` window (whole seconds apart) holding the most attribution."""
    n, width = attribution.shape[-1], int(round(seconds * fs))
    if n <= width:
        return 0
    mass = np.concatenate([[0.0], np.cumsum(attribution.sum(axis=0))])
    starts = np.arange(0, n - width + 1, max(1, int(fs)))
    return int(starts[np.argmax(mass[starts + width] - mass[starts])])


def _grid_lines(t0: float, seconds: float, half: float, dt: float, dv: float) -> list:
    """The segments of a grid of ``dt`` s × ``dv`` mV squares over one panel."""
    times = t0 + np.arange(0, seconds + 1e-9, dt)
    volts = np.arange(-half, half + 1e-9, dv)
    return ([[(t, -half), (t, half)] for t in times] + [[(t0, v), (t0 + seconds, v)] for v in volts])


def _paper(ax, t0: float, seconds: float) -> None:
    """ECG paper: 1-mm minor and 5-mm major squares (0.04 s / 0.1 mV and 0.2 s / 0.5 mV), drawn as two line
    collections (matplotlib's tick grid makes an object per line: ten times slower for the 13 panels)."""
    half = ROW_MM / MM_PER_MV / 2
    ax.set_xlim(t0, t0 + seconds)
    ax.set_ylim(-half, half)
    ax.add_collection(LineCollection(_grid_lines(t0, seconds, half, 0.04, 0.1), colors="#f6d7d7", linewidths=0.2,
                                     zorder=1))
    ax.add_collection(LineCollection(_grid_lines(t0, seconds, half, 0.2, 0.5), colors="#e8a0a0", linewidths=0.45,
                                     zorder=2))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def ecg_figure(signal: np.ndarray, fs: float, leads, attribution: np.ndarray, title: str,
               shares=None) -> Figure:
    """The standard clinical 12-lead printout of ``signal`` (12, N) in mV — 3 rows × 4 columns of 2.5 s
    (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6) and a lead II rhythm strip, 25 mm/s, 10 mm/mV on ECG paper —
    each panel shaded by ``attribution`` (12, N, ≥ 0) over time and labelled with its lead's share. Records
    longer than 10 s show the 10 s holding most attribution. 13 axes, one per panel."""
    leads = list(leads)
    start = _window_start(attribution, fs, ECG_SECONDS)
    stop = min(signal.shape[-1], start + int(round(ECG_SECONDS * fs)))
    seconds = (stop - start) / fs
    width_mm = seconds * MM_PER_S
    fig_w, fig_h = width_mm + 2 * MARGIN_MM, 4 * ROW_MM + TITLE_MM + 2 * MARGIN_MM
    fig = Figure(figsize=(fig_w / 25.4, fig_h / 25.4), dpi=ECG_DPI)
    shown = attribution[:, start:stop]
    kernel = np.ones(max(1, int(round(0.04 * fs)))) / max(1, int(round(0.04 * fs)))  # 40 ms: one small square
    shade = np.stack([np.convolve(lead, kernel, mode="same") for lead in shown])
    top = float(np.percentile(shade, 99.5)) or float(shade.max()) or 1.0
    panels = [(r, c, lead, c * seconds / 4, seconds / 4) for r, row in enumerate(ECG_LAYOUT)
              for c, lead in enumerate(row)] + [(3, 0, RHYTHM_LEAD, 0.0, seconds)]
    for row, col, lead, offset, span in panels:
        i = leads.index(lead)
        left = MARGIN_MM + col * width_mm / 4
        bottom = MARGIN_MM + (3 - row) * ROW_MM
        ax = fig.add_axes([left / fig_w, bottom / fig_h, span * MM_PER_S / fig_w, ROW_MM / fig_h])
        a, b = int(round(offset * fs)), min(shown.shape[-1], int(round((offset + span) * fs)))
        t = np.arange(a, b) / fs
        trace = signal[i, start + a:start + b]
        half = ROW_MM / MM_PER_MV / 2
        ax.imshow(shade[i, a:b][None], extent=(offset, offset + span, -half, half), aspect="auto", cmap="Purples",
                  vmin=0.0, vmax=top, alpha=0.6, origin="lower", interpolation="nearest", zorder=0)
        ax.plot(t, trace - np.median(trace), color="black", lw=0.6, zorder=3)
        _paper(ax, offset, span)
        label = lead if shares is None else f"{lead} {100 * shares[i]:.0f}%"
        ax.text(0.01, 0.97, label, transform=ax.transAxes, va="top", fontsize=7, zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})
    fig.text(0.5, 1 - (MARGIN_MM / 2) / fig_h, title, ha="center", va="top", fontsize=9)
    fig.text(1 - MARGIN_MM / fig_w, MARGIN_MM / 3 / fig_h, "25 mm/s  10 mm/mV  shading: share of the predicted "
             "age's attribution", ha="right", va="bottom", fontsize=6, color="#555555")
    return fig


def plot_ecg_explanation(signal, fs, leads, attribution, title, out_png, shares=None) -> Path:
    save_figure(out_png, ecg_figure(signal, fs, leads, attribution, title, shares), dpi=ECG_DPI, tight=False)
    return Path(out_png)


def plot_interval_by_bin(bins: list[dict], level: float, out_png):
    """Coverage (with the nominal level) and mean width of the intervals per age decade."""
    labels = [f"{b['lo']:g}–{b['hi']:g}" for b in bins]
    fig = Figure(figsize=(max(6, 0.8 * len(bins)), 4))
    ax = fig.subplots()
    ax.bar(labels, [b["coverage"] for b in bins], color="tab:blue", alpha=0.7, label="coverage")
    ax.axhline(level, color="black", ls="--", lw=1, label=f"nominal {level:g}")
    for i, b in enumerate(bins):
        ax.annotate(f"n={b['n']}", (i, b["coverage"]), ha="center", va="bottom", fontsize=7)
    ax.set(xlabel="chronological age (years)", ylabel="share of ages inside the interval", ylim=(0, 1.08),
           title="interval coverage and width by age decade")
    width = ax.twinx()
    widths = [b["mean_width"] for b in bins]
    width.plot(labels, widths, color="tab:red", marker="o", label="mean width")
    width.set_ylim(0, 1.15 * max(widths))
    width.set_ylabel("mean width (years)", color="tab:red")
    handles = ax.get_legend_handles_labels()[0] + width.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    return _save(fig, out_png)


def plot_lead_importance(mean: dict, n: int, out_png):
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.bar(list(mean), [100 * v for v in mean.values()], color="tab:purple")
    ax.axhline(100 / len(mean), color="gray", ls="--", lw=1, label="equal shares")
    ax.set(ylabel="mean share of attribution (%)", title=f"lead importance over {n} ECGs")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_png)
