"""Charts drawn as images (matplotlib, headless): several runs' curves overlaid, where the series change with the
selection. matplotlib loads only when a chart is drawn."""

from __future__ import annotations

from collections.abc import Mapping


def overlay(curves: Mapping[str, Mapping[str, list[tuple[float, float]]]], x_label: str, title: str):
    """One line per (run, series): `curves[run][series]` is a list of (x, y). Returns a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4), dpi=100)
    styles = {"train loss": "-", "eval loss": "--"}
    for index, (run, series) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        for name, points in series.items():
            if points:
                xs, ys = zip(*sorted(points), strict=True)
                axes.plot(xs, ys, styles.get(name, "-"), color=colour, label=f"{run}: {name}",
                          marker="o" if len(points) < 3 else None)
    axes.set_xlabel(x_label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    pyplot.close(figure)  # gradio renders the figure object; pyplot must not keep it alive
    return figure
