"""What a person does with a run: mean maps per class, rankings, confident mistakes, figures.

Reads the shards one at a time (memory: one shard plus the per-class sums and one
row of scalars per image), so it works on runs larger than memory.

Example:
    >>> s = summarize_dataset("results/")            # doctest: +SKIP
    >>> s.confident_mistakes.head()                   # doctest: +SKIP
    >>> s.save("results/figures")                     # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._store import iter_shards, read_manifest, to_frame

__all__ = ["DatasetSummary", "summarize_dataset"]


@dataclass(frozen=True)
class DatasetSummary:
    """The data-set view of a run.

    Attributes:
        methods: the methods of the run.
        classes: class names (None: indices).
        counts: ``{class index: images}`` (by label; by predicted class for unlabelled images).
        mean_maps: ``{method: {class index: (H, W) float64 mean map}}``.
        outside: ``{method: DataFrame}`` images ranked by the fraction of attribution mass
            outside the object (needs masks/boxes; empty otherwise), most outside first.
        worst_deletion: ``{method: DataFrame}`` images ranked by deletion AUC, highest (worst) first
            (empty unless the run had ``deletion_steps``).
        confident_mistakes: wrongly predicted images, most confident first.
        thumbnails: ``{index: (h, w, C) uint8}`` for the images in the rankings (when the run stored them).
    """

    methods: tuple[str, ...]
    classes: list[str] | None
    counts: dict[int, int]
    mean_maps: dict[str, dict[int, np.ndarray]]
    outside: dict[str, Any]
    worst_deletion: dict[str, Any]
    confident_mistakes: Any
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)

    def class_name(self, c: int) -> str:
        """The name of class ``c`` (its index as a string without names)."""
        return self.classes[c] if self.classes and 0 <= c < len(self.classes) else str(c)

    def figure_class(self, c: int):
        """A ``matplotlib.figure.Figure``: class ``c``'s mean map for each method."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2.4 * len(self.methods), 2.6), layout="constrained")
        axes = fig.subplots(1, len(self.methods), squeeze=False)[0]
        for ax, m in zip(axes, self.methods):
            ax.imshow(self.mean_maps[m][c], cmap="magma")
            ax.set_title(m, fontsize=9)
            ax.set_axis_off()
        fig.suptitle(f"class {self.class_name(c)}: mean map over {self.counts[c]} images", fontsize=10)
        return fig

    def figure_ranking(self, table: Any, title: str, value: str):
        """Thumbnails of the rows of ``table`` (a ranking), each titled with ``value``."""
        from matplotlib.figure import Figure

        rows = [r for r in table.itertuples() if r.index in self.thumbnails] if len(table) else []
        n = max(1, len(rows))
        fig = Figure(figsize=(1.6 * min(n, 8), 1.9 * -(-n // 8)), layout="constrained")
        axes = fig.subplots(-(-n // 8), min(n, 8), squeeze=False).ravel()
        for ax in axes:
            ax.set_axis_off()
        for ax, r in zip(axes, rows):
            im = self.thumbnails[r.index]
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray")
            ax.set_title(f"{r.id}\n{value}={getattr(r, value):.2f}", fontsize=6)
        fig.suptitle(title, fontsize=10)
        return fig

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write a PNG per class and per non-empty ranking into ``folder``; return the paths."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        figs = {f"class_{self.class_name(c)}.png": self.figure_class(c) for c in sorted(self.counts)}
        if len(self.confident_mistakes):
            figs["confident_mistakes.png"] = self.figure_ranking(self.confident_mistakes, "confident mistakes", "prob")
        for m, t in self.outside.items():
            if len(t):
                figs[f"outside_{m}.png"] = self.figure_ranking(t, f"{m}: mass outside the object", "outside")
        for m, t in self.worst_deletion.items():
            if len(t):
                figs[f"deletion_{m}.png"] = self.figure_ranking(t, f"{m}: worst deletion AUC", "deletion_auc")
        paths = []
        for name, fig in figs.items():
            fig.savefig(out / name, dpi=100)
            paths.append(out / name)
        return paths


def _accumulate(out: str | os.PathLike, man: dict[str, Any], methods: tuple[str, ...]):
    """Per-class sums of the maps and one row of scalars per image, one shard at a time."""
    import pandas as pd

    sums: dict[str, dict[int, np.ndarray]] = {m: {} for m in methods}
    counts: dict[int, int] = {}
    scalars = []
    for table in iter_shards(out, [c for c in table_columns(man) if c != "thumbnail"]):
        df = to_frame(table, man)
        cls = np.where(df["label"].to_numpy() >= 0, df["label"].to_numpy(), df["pred"].to_numpy())
        for c in np.unique(cls):
            sel = cls == c
            counts[int(c)] = counts.get(int(c), 0) + int(sel.sum())
            for m in methods:
                s = np.stack(df.loc[sel, f"{m}_map"].to_list()).astype(np.float64).sum(0)
                sums[m][int(c)] = sums[m].get(int(c), 0) + s
        scalars.append(df.drop(columns=[f"{m}_map" for m in methods]))
    means = {m: {c: sums[m][c] / counts[c] for c in sorted(counts)} for m in methods}
    return counts, means, pd.concat(scalars, ignore_index=True)


def table_columns(man: dict[str, Any]) -> list[str]:
    """Every column a run's shards hold (from the manifest's settings)."""
    cols = ["id", "index", "label", "pred", "prob", "target", "target_prob"]
    if man["settings"]["thumbnail"]:
        cols.append("thumbnail")
    for m in man["settings"]["methods"]:
        cols += [f"{m['name']}_map", f"{m['name']}_inside"]
        if man["settings"]["deletion_steps"]:
            cols += [f"{m['name']}_deletion_auc", f"{m['name']}_insertion_auc"]
    return cols


def summarize_dataset(out: str | os.PathLike, *, top: int = 16) -> DatasetSummary:
    """Summarize a finished run (see :class:`DatasetSummary`).

    Args:
        out: the run's folder.
        top: images kept in each ranking.

    Raises:
        ValueError: no finished run in ``out``, a bad ``top``.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    man = read_manifest(out)
    if not man.get("complete"):
        raise ValueError(f"out={str(out)!r}: the run is not complete; finish it with explain_dataset(..., resume=True)")
    methods = tuple(m["name"] for m in man["settings"]["methods"])
    counts, means, sc = _accumulate(out, man, methods)
    keep = ["index", "id", "label", "pred", "prob"]
    outside, worst = {}, {}
    for m in methods:
        t = sc[keep].assign(outside=1.0 - sc[f"{m}_inside"])
        outside[m] = t.dropna(subset=["outside"]).sort_values(["outside", "index"], ascending=[False, True]).head(top)
        if f"{m}_deletion_auc" in sc:
            t = sc[keep].assign(deletion_auc=sc[f"{m}_deletion_auc"])
            worst[m] = t.sort_values(["deletion_auc", "index"], ascending=[False, True]).head(top)
    wrong = sc[(sc["label"] >= 0) & (sc["pred"] != sc["label"])][keep]
    mistakes = wrong.sort_values(["prob", "index"], ascending=[False, True]).head(top).reset_index(drop=True)
    wanted = set(mistakes["index"]).union(*(set(t["index"]) for t in (*outside.values(), *worst.values())))
    return DatasetSummary(methods, man["data"]["classes"], counts, means, outside, worst, mistakes,
                          _thumbnails(out, man, wanted))


def _thumbnails(out: str | os.PathLike, man: dict[str, Any], wanted: set[int]) -> dict[int, np.ndarray]:
    if not man["settings"]["thumbnail"] or not wanted:
        return {}
    found = {}
    for table in iter_shards(out, ["index", "thumbnail"]):
        df = to_frame(table, man)
        for i, im in zip(df["index"], df["thumbnail"]):
            if int(i) in wanted:
                found[int(i)] = im
    return found
