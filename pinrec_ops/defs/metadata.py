"""Metadata for the UI: small matplotlib charts embedded as markdown images (the Dagster UI renders
`![...](data:image/png;base64,...)`), and what a training run reports."""

import base64
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
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


def config_tag(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def training_run_metadata(result, days: list, n_events: int) -> dict:
    """What an operator wants to see of a training run: time, size, data window, loss curve."""
    meta = {
        "train_seconds": round(result.train_seconds, 1),
        "epochs": result.epochs,
        "n_items": result.model.cfg.n_items,
        "events": n_events,
        "data_window": f"{days[0]} .. {days[-1]} ({len(days)} days)",
        "run_dir": MetadataValue.path(str(result.out_dir)),
    }
    logs = sorted(Path(result.out_dir).rglob("metrics.csv"))
    if logs:
        log = pd.read_csv(logs[-1])
        loss_cols = [c for c in log.columns if c.startswith("train/loss")]
        if loss_cols:
            curve = log[["step", loss_cols[0]]].dropna()
            if len(curve) > 1:
                meta["loss_curve"] = line_chart({"train loss": curve[loss_cols[0]].tolist()}, curve["step"].tolist(),
                                                "training loss", "loss")
                meta["final_loss"] = float(curve[loss_cols[0]].iloc[-1])
    return meta
