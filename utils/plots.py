"""PNG figures (matplotlib, headless): learning curves here; evaluation plots live in utils/report.py."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history_csv: str | Path, out_png: str | Path):
    """Validation MAE, train/valid loss and learning rate per epoch from a run's history.csv."""
    history = pd.read_csv(history_csv)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
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
    fig.tight_layout()
    save_figure(out_png, fig)
    plt.close(fig)
    return fig
