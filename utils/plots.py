"""PNG figures (matplotlib, headless): learning curves and the evaluation report's plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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


def plot_kaplan_meier(curves: dict, out_png, threshold: float = 8.0):
    colours = {"younger": "tab:green", "reference": "tab:gray", "older": "tab:red"}
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for group, curve in curves.items():
        ax.step(curve["timeline"], curve["survival"], where="post", color=colours[group], label=group)
    ax.set(xlabel="years of follow-up", ylabel="survival", title=f"Kaplan–Meier by ECG-age gap (±{threshold:g} y)")
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
