"""Small matplotlib charts embedded in asset metadata as markdown images (the Dagster UI renders
`![...](data:image/png;base64,...)`)."""

import base64
import io
from collections.abc import Mapping, Sequence

from dagster import MetadataValue


def _figure(width: float = 6.0, height: float = 2.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=90)


def _to_markdown(fig, title: str) -> MetadataValue:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def line_chart(series: Mapping[str, Sequence[float]], x: Sequence, title: str, ylabel: str = "") -> MetadataValue:
    """One line per named series over a shared x axis (loss curves, recall per day)."""
    fig, ax = _figure()
    for name, values in series.items():
        ax.plot(list(x)[: len(values)], list(values), marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _to_markdown(fig, title)


def stacked_bars(stacks: Mapping[str, Sequence[float]], labels: Sequence[str], title: str, ylabel: str = "") -> MetadataValue:
    """Stacked bars per label (rows good vs quarantined per day, outcome mix per surface)."""
    fig, ax = _figure()
    bottom = [0.0] * len(labels)
    for name, values in stacks.items():
        ax.bar(list(labels), list(values), bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if len(labels) > 8:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(list(labels), rotation=60, fontsize=7)
    return _to_markdown(fig, title)
