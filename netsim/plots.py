"""PNG plots of a run and of a sweep (matplotlib, no display needed).

Every plot states its question in the title and its parameters in a
caption, draws the 95 % interval over seeds wherever there is more than one
seed, and draws the prediction of :mod:`netsim.theory` (which includes the
colluding share r, lazy validators and the committee) next to the
measurement. Profit is drawn on a diverging colour map centred on zero, so
break-even is the white band, with the zero contour of the measurement and
of the theory on top. Listed grid values are categorical axes (evenly
spaced, each labelled); ranges are continuous. A point the ledger refused
is marked with its reason; a point whose interval spans zero is hatched or
drawn hollow.

Detection against cheated jobs is :func:`netsim.metrics.caught_within`, a
Kaplan–Meier estimate.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from netsim import theory
from netsim.intervals import INTERVAL, estimate
from netsim.metrics import caught_within
from netsim.population import Population
from protocol.sampling import PPM

if TYPE_CHECKING:
    from netsim.config import SimConfig
    from netsim.grid import Axis
    from netsim.tables import SeedTables

PROFIT_METRICS = ("cheat_gain_per_cheated_job",)
SWEEP_METRICS: Mapping[str, tuple[str, str | None]] = {
    "cheat_gain_per_cheated_job": (
        "Gain per cheated job (tokens): where does cheating stop paying?",
        "theory_cheat_gain_per_cheated_job",
    ),
    "detection_per_cheated_job": (
        "Share of cheated jobs caught, against the prediction",
        "theory_detection_per_cheated_job",
    ),
    "verification_overhead_pct": ("Verification overhead (% of inference compute)", None),
}
"""Metric → (title, theory column)."""
CELL_LABELS = 48
"""Heat maps with at most this many cells print each cell's mean ± half-width."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _number(value: float) -> str:
    return f"{value:,.6g}"


def parameters(config: SimConfig, seeds: Sequence[int], swept: Sequence[str] = ()) -> str:
    """The caption: what the network was, in the papers' symbols; swept keys say so."""
    from netsim.config import ALIASES

    swept_paths = {ALIASES.get(s, s) for s in swept}
    ledger = config.ledger

    def show(symbol: str, path: str, value: str) -> str:
        if path in swept_paths or symbol in swept:
            return f"{symbol} swept"
        return f"{symbol} = {value}"

    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1
                 else f"{len(seeds)} seeds {seeds[0]}–{seeds[-1]}, {INTERVAL}")
    lines = [
        f"{config.nodes:,} nodes, {config.validators:,} validators, {config.jobs:,} jobs "
        f"over {config.epochs} epochs ({config.arrivals}), {config.path} path, {seed_text}",
        ", ".join([
            show("p", ALIASES["p"], _number(ledger.sample_ppm / PPM)),
            show("R", ALIASES["R"], _number(ledger.reward)),
            show("S", ALIASES["slash"], _number(ledger.fraud_slash)),
            show("C", ALIASES["C"], _number(config.cost)),
            show("r", ALIASES["r"], _number(config.colluding)),
            show("k", ALIASES["k"], _number(ledger.committee_size)),
            show("lazy", "validators.lazy", _number(config.lazy)),
            show("griefing", "validators.griefing", _number(config.griefing)),
            show("jail", "ledger.jail_period", f"{ledger.jail_period} rounds"),
            show("tombstone", "ledger.tombstone_offences", f"{ledger.tombstone_offences}th"),
        ]),
    ]
    for i, s in enumerate(config.strategies):
        rate = show("q", f"nodes.strategy.{i}.rate", _number(s.rate))
        lines.append(f"{s.kind}: {s.share:.0%} of nodes, {rate}, saving s = {_number(s.saving)}"
                     + (f", step {_number(s.step)}" if s.kind == "adaptive" else ""))
    if not config.strategies:
        lines.append("every node honest")
    return "\n".join(lines)


def _finish(fig: Any, ax: Any, title: str, caption: str, path: Path) -> None:
    ax.set_title(title)
    lines = caption.count("\n") + 1
    fig.text(0.01, 0.01, caption, fontsize=7, va="bottom", ha="left", color="#333333")
    fig.tight_layout(rect=(0, 0.02 + 0.028 * lines, 1, 1))
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def _band(ax: Any, x: np.ndarray, per_seed: np.ndarray, label: str, **style: Any) -> Any:
    """Mean over seeds (rows) and, with two or more seeds, its 95 % interval as a band."""
    found = [estimate(column) for column in per_seed.T]
    mean = np.array([f.mean for f in found])
    line = ax.plot(x, mean, label=label, **style)[0]
    if per_seed.shape[0] > 1:
        low, high = np.array([f.low for f in found]), np.array([f.high for f in found])
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


# -- a run ------------------------------------------------------------------------------


def plot_run(folder: Path, runs: SeedTables) -> None:
    plt = _pyplot()
    config = runs.config
    caption = parameters(config, runs.seeds)
    epochs = [run.epochs for run in runs.runs]
    x = epochs[0]["epoch"]

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in ("cheater_profit", "cheat_gain", "validator_profit"):
        per_seed = np.array([np.cumsum(e[name]) for e in epochs])
        _band(ax, x, per_seed, name.replace("_", " "))
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set(xlabel="epoch", ylabel="cumulative tokens")
    ax.legend()
    _finish(fig, ax, "Does cheating pay? Cumulative profit of cheaters and validators",
            caption, folder / "profit.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    _band(ax, x, np.array([e["active"] for e in epochs], dtype=float), "active nodes")
    _band(ax, x, np.array([e["auditors"] for e in epochs], dtype=float), "bonded validators")
    ax.set(xlabel="epoch", ylabel="count", ylim=(0, None))
    ax.legend()
    _finish(fig, ax, "Is the network still running? Active nodes and validators",
            caption, folder / "network.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    overhead = np.array([e["verification_overhead_pct"] for e in epochs])
    _band(ax, x, overhead, "verification overhead (% of compute)")
    ax.axhline(100 * config.ledger.sample_ppm / PPM, color="grey", linestyle="--",
               label="p: one re-execution per sampled job")
    ax.set(xlabel="epoch", ylabel="%", ylim=(0, None))
    ax.legend()
    _finish(fig, ax, "What does verification cost? Re-execution against inference compute",
            caption, folder / "overhead.png")

    _plot_detection(folder, runs, caption)


def _plot_detection(folder: Path, runs: SeedTables, caption: str) -> None:
    kinds = sorted({k for run in runs.runs for k in run.nodes["kind"] if k != "honest"})
    if not kinds:
        return
    plt = _pyplot()
    catch = theory.catch_probabilities(Population.draw(runs.config))
    longest = max(int(run.nodes["cheated"].max()) for run in runs.runs)
    most = max(1, min(longest, 200))
    n = np.arange(1, most + 1)
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for kind in kinds:
        curves = []
        for run in runs.runs:
            mine = (run.nodes["kind"] == kind) & (run.nodes["cheated"] > 0)
            curves.append(caught_within(run.nodes["cheats_to_detection"][mine],
                                        run.nodes["cheated"][mine], most))
        per_seed = np.array(curves)
        if np.isnan(per_seed).all():
            continue
        line = _band(ax, n, per_seed, f"{kind}: measured (Kaplan–Meier)")
        nodes = runs.runs[0].nodes["kind"] == kind
        expected = np.mean([1 - (1 - pi) ** n for pi in catch[nodes]], axis=0)
        pi = float(np.mean(catch[nodes]))
        ax.plot(n, expected, linestyle="--", color=line.get_color(),
                label=f"{kind}: theory 1−(1−π)ⁿ, π = {pi:.4f} (p, r, lazy, committee)")
        drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.set(xlabel="cheated jobs n", ylabel="share of cheaters caught within n",
           ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    _finish(fig, ax, "How many cheated jobs until a cheater is caught?", caption,
            folder / "detection.png")


# -- a sweep ------------------------------------------------------------------------------


def _positions(axis: Axis) -> tuple[np.ndarray, list[str]]:
    """Where each value is drawn: itself on a numeric range, its index when categorical."""
    labels = [_number(v) if isinstance(v, int | float) else str(v) for v in axis.values]
    if axis.categorical:
        return np.arange(len(axis.values), dtype=float), labels
    return np.asarray(axis.values, dtype=float), labels


def _value_index(axis: Axis, value: Any) -> int:
    for i, v in enumerate(axis.values):
        if v == value or (isinstance(v, float) and isinstance(value, int | float)
                          and np.isclose(v, value)):
            return i
    raise KeyError(f"{value!r} is not on axis {axis.name}")


def _short_reasons(points: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each distinct refusal reason, numbered from 1 in order of first appearance."""
    reasons: dict[str, int] = {}
    for p in points:
        if p["status"] != "ok" and p["reason"] not in reasons:
            reasons[p["reason"]] = len(reasons) + 1
    return reasons


def _reason_caption(reasons: Mapping[str, int]) -> str:
    return "\n".join(
        textwrap.shorten(f"refused ({number}): {reason}", 170)
        for reason, number in reasons.items()
    )


def _value(p: Mapping[str, Any], key: str) -> float:
    value = p.get(key)
    return float(value) if isinstance(value, int | float) and value is not None else np.nan


def plot_sweep(
    folder: Path, base: SimConfig, axes: Sequence[Axis], seeds: int,
    points: Sequence[Mapping[str, Any]],
) -> None:
    caption = parameters(base, tuple(range(base.seed, base.seed + seeds)),
                         [a.name for a in axes])
    reasons = _short_reasons(points)
    if reasons:
        caption += "\n" + _reason_caption(reasons)
    for metric, (title, theory_key) in SWEEP_METRICS.items():
        if not any(np.isfinite(_value(p, metric)) for p in points):
            continue
        if len(axes) == 1:
            _sweep_lines(folder / f"{metric}.png", axes[0], None, points, metric, theory_key,
                         reasons, title, caption)
        else:
            _sweep_lines(folder / f"{metric}-lines.png", axes[0], axes[1], points, metric,
                         theory_key, reasons, title, caption)
            _sweep_heatmap(folder / f"{metric}.png", axes[0], axes[1], points, metric,
                           theory_key, reasons, title, caption)


def _sweep_lines(
    path: Path, x_axis: Axis, line_axis: Axis | None, points: Sequence[Mapping[str, Any]],
    metric: str, theory_key: str | None, reasons: Mapping[str, int], title: str, caption: str,
) -> None:
    """The metric against the first axis, one line per value of the second, with intervals."""
    plt = _pyplot()
    from matplotlib.transforms import blended_transform_factory

    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs, labels = _positions(x_axis)
    groups = [None] if line_axis is None else list(line_axis.values)
    marked_refused = inconclusive = False
    for group in groups:
        mine = [p for p in points if line_axis is None or p[line_axis.name] == group]
        where = np.array([xs[_value_index(x_axis, p[x_axis.name])] for p in mine])
        order = np.argsort(where, kind="stable")
        mine = [mine[i] for i in order]
        where = where[order]
        mean = np.array([_value(p, metric) for p in mine])
        low = np.array([_value(p, f"{metric}_low") for p in mine])
        high = np.array([_value(p, f"{metric}_high") for p in mine])
        name = "measured" if line_axis is None else f"{line_axis.name} = {group}"
        line = ax.plot(where, mean, "-", label=name)[0]
        colour = line.get_color()
        has_interval = np.isfinite(low) & np.isfinite(high)
        if has_interval.any():
            ax.errorbar(where[has_interval], mean[has_interval],
                        yerr=[mean[has_interval] - low[has_interval],
                              high[has_interval] - mean[has_interval]],
                        fmt="none", ecolor=colour, capsize=3, linewidth=1)
        spans = has_interval & (low < 0) & (high > 0)
        ax.plot(where[~spans], mean[~spans], "o", color=colour, markersize=5)
        ax.plot(where[spans], mean[spans], "o", markerfacecolor="white", color=colour,
                markersize=6)
        inconclusive = inconclusive or bool(spans.any())
        if theory_key is not None:
            expected = np.array([_value(p, theory_key) for p in mine])
            if np.isfinite(expected).any():
                ax.plot(where, expected, "--", color=colour, linewidth=1,
                        label=f"theory ({name})" if line_axis else "theory (includes r)")
        bottom = blended_transform_factory(ax.transData, ax.transAxes)
        height = 0.04 + 0.06 * groups.index(group)
        for w, p in zip(where, mine, strict=True):
            if p["status"] != "ok":
                ax.plot(w, height, "x", color=colour, markersize=8, transform=bottom)
                ax.text(w, height, f"  ({reasons[p['reason']]})", color="crimson", fontsize=7,
                        va="center", transform=bottom)
                marked_refused = True
    if inconclusive:
        ax.plot([], [], "o", markerfacecolor="white", color="grey",
                label="interval spans 0 (inconclusive)")
    if marked_refused:
        ax.plot([], [], "x", color="grey", label="refused by the ledger: (reason) below")
    if metric in PROFIT_METRICS:
        ax.axhline(0, color="black", linewidth=0.8)
    if x_axis.categorical:
        ax.set_xticks(xs, labels)
    ax.set(xlabel=x_axis.name + (" (listed values)" if x_axis.categorical else ""),
           ylabel=metric.replace("_", " "))
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    _finish(fig, ax, title, caption, path)


def _sweep_heatmap(
    path: Path, x_axis: Axis, y_axis: Axis, points: Sequence[Mapping[str, Any]],
    metric: str, theory_key: str | None, reasons: Mapping[str, int], title: str, caption: str,
) -> None:
    plt = _pyplot()
    from matplotlib.colors import CenteredNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    xs, x_labels = _positions(x_axis)
    ys, y_labels = _positions(y_axis)
    shape = (len(ys), len(xs))
    mean, low, high, expected = (np.full(shape, np.nan) for _ in range(4))
    refused: list[tuple[int, int, int]] = []
    for p in points:
        i, j = _value_index(y_axis, p[y_axis.name]), _value_index(x_axis, p[x_axis.name])
        if p["status"] != "ok":
            refused.append((i, j, reasons[p["reason"]]))
            continue
        mean[i, j] = _value(p, metric)
        low[i, j], high[i, j] = _value(p, f"{metric}_low"), _value(p, f"{metric}_high")
        if theory_key is not None:
            expected[i, j] = _value(p, theory_key)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    masked = np.ma.masked_invalid(mean)
    if metric in PROFIT_METRICS:
        scale = float(np.nanmax(np.abs(mean))) or 1.0
        mesh = ax.pcolormesh(xs, ys, masked, shading="nearest", cmap="RdBu_r",
                             norm=CenteredNorm(vcenter=0.0, halfrange=scale))
    else:
        mesh = ax.pcolormesh(xs, ys, masked, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=metric.replace("_", " "))
    legend = []
    if metric in PROFIT_METRICS:
        lines = ((mean, "-", "measured"), (expected, "--", "theory (includes r)"))
        for grid, style, label in lines:
            if _break_even(ax, x_axis, y_axis, xs, ys, grid, style):
                legend.append(Line2D([], [], color="black", linestyle=style,
                                     label=f"break-even, {label}"))
    widths = _cell_sizes(xs), _cell_sizes(ys)
    spans = np.isfinite(low) & (low < 0) & (high > 0)
    for i, j in zip(*np.nonzero(spans), strict=True):
        ax.add_patch(Rectangle((xs[j] - widths[0][j] / 2, ys[i] - widths[1][i] / 2),
                               widths[0][j], widths[1][i], fill=False, hatch="///",
                               edgecolor="#555555", linewidth=0))
    if spans.any():
        legend.append(Patch(facecolor="white", hatch="///", edgecolor="#555555",
                            label="interval spans 0 (inconclusive)"))
    for i, j, number in refused:
        ax.add_patch(Rectangle((xs[j] - widths[0][j] / 2, ys[i] - widths[1][i] / 2),
                               widths[0][j], widths[1][i], color="#dddddd"))
        ax.text(xs[j], ys[i], f"refused\n({number})", ha="center", va="center", fontsize=7,
                color="crimson")
    if refused:
        legend.append(Patch(facecolor="#dddddd", label="refused by the ledger (reason below)"))
    if mean.size <= CELL_LABELS:
        for i, j in zip(*np.nonzero(np.isfinite(mean)), strict=True):
            text = _number(round(mean[i, j], 3))
            if np.isfinite(low[i, j]):
                text += f"\n±{_number(round((high[i, j] - low[i, j]) / 2, 3))}"
            red, green, blue, _ = mesh.cmap(mesh.norm(mean[i, j]))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(xs[j], ys[i], text, ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    if x_axis.categorical:
        ax.set_xticks(xs, x_labels)
    if y_axis.categorical:
        ax.set_yticks(ys, y_labels)
    ax.set(xlabel=x_axis.name + (" (listed values)" if x_axis.categorical else ""),
           ylabel=y_axis.name + (" (listed values)" if y_axis.categorical else ""))
    if legend:
        ax.legend(handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12),
                  ncol=2, frameon=False)
    _finish(fig, ax, title, caption, path)


def _crossings(positions: np.ndarray, values: np.ndarray) -> list[float]:
    """Where a row of values crosses zero, interpolated linearly between neighbours."""
    out = []
    for a in range(len(values) - 1):
        left, right = values[a], values[a + 1]
        if np.isfinite(left) and np.isfinite(right) and (left < 0) != (right < 0):
            out.append(float(positions[a] + (positions[a + 1] - positions[a])
                             * left / (left - right)))
    return out


def _break_even(
    ax: Any, x_axis: Axis, y_axis: Axis, xs: np.ndarray, ys: np.ndarray, grid: np.ndarray,
    style: str,
) -> bool:
    """Draw where ``grid`` crosses zero; True if it does anywhere.

    Two numeric ranges: the zero contour. One categorical axis: a mark in each
    of its rows or columns where the value crosses zero along the numeric
    axis, never interpolated between categories. Two categorical axes: none.
    """
    if not (np.nanmin(grid, initial=np.inf) < 0 < np.nanmax(grid, initial=-np.inf)):
        return False
    if not x_axis.categorical and not y_axis.categorical:
        if min(grid.shape) < 2:
            return False
        ax.contour(xs, ys, np.ma.masked_invalid(grid), levels=[0.0], colors="black",
                   linestyles=style, linewidths=1.5)
        return True
    drew = False
    heights, widths = _cell_sizes(ys), _cell_sizes(xs)
    if not x_axis.categorical:
        for i, y in enumerate(ys):
            for x in _crossings(xs, grid[i]):
                ax.plot([x, x], [y - heights[i] / 2, y + heights[i] / 2], style,
                        color="black", linewidth=2)
                drew = True
    elif not y_axis.categorical:
        for j, x in enumerate(xs):
            for y in _crossings(ys, grid[:, j]):
                ax.plot([x - widths[j] / 2, x + widths[j] / 2], [y, y], style,
                        color="black", linewidth=2)
                drew = True
    return drew


def _cell_sizes(centres: np.ndarray) -> np.ndarray:
    """The width of each ``nearest`` cell: halfway to each neighbour."""
    if len(centres) == 1:
        return np.ones(1)
    edges = np.concatenate([[centres[0] - (centres[1] - centres[0]) / 2],
                            (centres[1:] + centres[:-1]) / 2,
                            [centres[-1] + (centres[-1] - centres[-2]) / 2]])
    return np.diff(edges)
