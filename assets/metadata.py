"""Metadata for the Dagster UI: tables with a column schema, the schema of a pandera contract,
charts (matplotlib, embedded as markdown images), and what a training run reports. Numeric
values are plain numbers so the asset's Plots tab draws them over partitions."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

_PANDERA_TYPES = {"int64": "int64", "Int64": "int64 (nullable)", "str": "string", "object": "string"}


def column_schema(schema) -> dg.TableSchema:
    """A pandera DataFrameSchema as Dagster's column schema (name, type, nullable, checks)."""
    columns = []
    for name, column in schema.columns.items():
        dtype = str(column.dtype)
        checks = ", ".join(str(getattr(c, "error", None) or getattr(c, "name", None) or c) for c in column.checks)
        columns.append(
            dg.TableColumn(
                name,
                _PANDERA_TYPES.get(dtype, dtype),
                description=checks or None,
                constraints=dg.TableColumnConstraints(nullable=bool(column.nullable)),
            )
        )
    return dg.TableSchema(columns=columns)


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (Dagster serializes only the latter)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def table_metadata(rows: Sequence[Mapping[str, Any]], types: Mapping[str, str]) -> dg.MetadataValue:
    """Rows as a Dagster table (`types`: column -> "string" | "int" | "float" | "bool")."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({k: _plain(row.get(k)) for k in types}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(k, t) for k, t in types.items()]),
    )


def _figure(width: float = 6.0, height: float = 2.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=90)


def _to_markdown(fig, title: str) -> dg.MetadataValue:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def line_chart(
    series: Mapping[str, Sequence[float]], x: Sequence, title: str, xlabel: str, ylabel: str
) -> dg.MetadataValue:
    """One line per named series over a shared, labelled x axis (a loss curve over steps)."""
    fig, ax = _figure()
    for name, values in series.items():
        ax.plot(list(x)[: len(values)], list(values), marker="o", markersize=2, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _to_markdown(fig, title)


def config_tag(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def training_run_metadata(result, days: list, n_events: int) -> dict:
    """What an operator wants to see of a training run: time, size, data window, the loss (first
    and last epoch, a curve over steps) and the validation figures when the run validated."""
    meta: dict[str, Any] = {
        "train_seconds": round(result.train_seconds, 1),
        "epochs": result.epochs,
        "n_items": result.model.cfg.n_items,
        "events": n_events,
        "data_window": f"{days[0]} .. {days[-1]} ({len(days)} days)",
        "data_through": str(days[-1]),
        "run_dir": dg.MetadataValue.path(str(result.out_dir)),
    }
    logs = sorted(Path(result.out_dir).rglob("metrics.csv"))
    if logs:
        log = pd.read_csv(logs[-1])
        loss_cols = [c for c in log.columns if c.startswith("train/loss")]
        if loss_cols:
            curve = log[["step", "epoch", loss_cols[0]]].dropna()
            if len(curve):
                by_epoch = curve.groupby("epoch")[loss_cols[0]].mean()
                meta["loss_first_epoch"] = float(by_epoch.iloc[0])
                meta["loss_last_epoch"] = float(by_epoch.iloc[-1])
            if len(curve) > 1:
                meta["loss_curve"] = line_chart(
                    {"train loss": curve[loss_cols[0]].tolist()},
                    curve["step"].tolist(),
                    "training loss",
                    "optimizer step",
                    "loss",
                )
    for name, value in (result.best_val or {}).items():
        if isinstance(value, (int, float)) and name.startswith("val/"):
            meta[name] = float(value)
    return meta
