"""PNG plots of a run and of a sweep (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.sampling import PPM

if TYPE_CHECKING:
    from netsim.config import SimConfig
    from netsim.tables import RunTables


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(folder: Path, config: SimConfig, tables: RunTables) -> None:
    plt = _pyplot()
    epochs = tables.epochs
    x = epochs["epoch"]

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("cheater_profit", "cheat_gain", "validator_profit"):
        ax.plot(x, np.cumsum(epochs[name]), label=name.replace("_", " "))
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set(xlabel="epoch", ylabel="cumulative tokens", title="Profit over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "profit.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, epochs["verification_overhead_pct"], label="verification overhead (% of compute)")
    ax.axhline(100 * config.ledger.sample_ppm / PPM, color="grey", linestyle="--",
               label="p (one re-execution per sampled job)")
    ax.set(xlabel="epoch", ylabel="%", title="Verification overhead")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "overhead.png", dpi=100)
    plt.close(fig)

    nodes = tables.nodes
    found = nodes["cheats_to_detection"][(nodes["kind"] != "honest") &
                                         (nodes["cheats_to_detection"] > 0)]
    if len(found):
        p = config.ledger.sample_ppm / PPM
        n = np.arange(1, int(found.max()) + 1)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.step(np.sort(found), np.arange(1, len(found) + 1) / len(found), where="post",
                label="measured (detected cheaters)")
        ax.plot(n, 1 - (1 - p) ** n, linestyle="--", label="1 − (1 − p)ⁿ")
        ax.set(xlabel="cheated jobs until caught", ylabel="fraction caught",
               title="Detection against cheated jobs")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "detection.png", dpi=100)
        plt.close(fig)


def plot_sweep(folder: Path, names: Sequence[str], table: dict[str, Any], metric: str) -> None:
    """A line per grid value (one axis) or a heat map (two axes) of ``metric``."""
    plt = _pyplot()
    values = np.asarray(table[metric], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(names) == 1:
        xs = np.asarray(table[names[0]], dtype=float)
        order = np.argsort(xs, kind="stable")
        ax.plot(xs[order], values[order], marker="o")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set(xlabel=names[0], ylabel=metric)
    else:
        xs, ys = (np.asarray(table[n], dtype=float) for n in names[:2])
        ux, uy = np.unique(xs), np.unique(ys)
        grid = np.full((len(uy), len(ux)), np.nan)
        for x, y, v in zip(xs, ys, values, strict=True):
            grid[np.searchsorted(uy, y), np.searchsorted(ux, x)] = v
        mesh = ax.pcolormesh(ux, uy, grid, shading="nearest", cmap="coolwarm")
        fig.colorbar(mesh, ax=ax, label=metric)
        ax.set(xlabel=names[0], ylabel=names[1])
    ax.set_title(f"{metric} across the sweep")
    fig.tight_layout()
    fig.savefig(folder / f"{metric}.png", dpi=100)
    plt.close(fig)
