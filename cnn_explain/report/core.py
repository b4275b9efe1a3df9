"""Writing the report: inputs, the per-section loop, figures on disk, the manifest, the atomic move.

The report is built in a fresh temporary folder next to ``out`` and moved into
place only when every section has been written, so a failed run leaves no
half-written report (and a previous report at ``out`` stays as it was). A folder
is replaced only when it is a previous report holding nothing but its own files
(:func:`check_out_folder`); ``manifest.json`` is strict JSON (NaN is written as ``null``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from markupsafe import Markup

from ..images import open_image
from ._folder import GENERATOR, check_out_folder, move_into_place, strict_json
from .html import figure_html, page, skipped_html
from .settings import ReportSettings

__all__ = ["write_report", "check_out_folder", "ReportResult", "FigureRecord", "ReportContext", "Skip",
           "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


class Skip(Exception):
    """Raised by a section builder whose inputs are missing; the message says why."""


@dataclass(frozen=True)
class FigureRecord:
    """One figure of the report: its files (relative to the report folder), section and caption."""

    file: str
    svg: str | None
    section: str
    title: str
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "svg": self.svg, "section": self.section, "title": self.title,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        path: the report's ``index.html``.
        manifest: the content of ``manifest.json`` (schema version, model summary numbers,
            settings, sections with their status, figures).
        figures: one :class:`FigureRecord` per figure, in page order.
    """

    path: Path
    manifest: dict[str, Any]
    figures: list[FigureRecord] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """The report folder (``path.parent``)."""
        return self.path.parent


@dataclass
class ReportContext:
    """Everything a section builder needs. Builders read it and add figures with :meth:`figure`.

    Attributes:
        explainer: the :class:`~cnn_explain.Explainer`.
        images: ``(N, C, H, W)`` batch on the explainer's device.
        names: one display name per image (file names when images were paths).
        data: the data set for embeddings, or None.
        settings: :class:`ReportSettings`.
        folder: the (temporary) folder being written.
        progress: whether capabilities show their own progress bars.
        shared: results computed by one section and reused by a later one.
    """

    explainer: Any
    images: torch.Tensor
    names: list[str]
    data: Any
    settings: ReportSettings
    folder: Path
    progress: bool = True
    figures: list[FigureRecord] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    section: str = ""

    @property
    def model(self):
        return self.explainer.model

    def figure(self, fig: Any, caption: str, *, dpi: int = 100) -> Markup:
        """Save ``fig`` as PNG (plus SVG when that file is smaller), record it, return its HTML (rendered ``figure.html``).

        Figures that draw raster images are kept as PNG only (their SVG would embed
        the same pixels as base64 and is always larger).

        The Figure is cleared afterwards so its memory is released.
        """
        stem = f"{len(self.figures) + 1:02d}-{self.section}"
        png = self.folder / f"{stem}.png"
        fig.savefig(png, format="png", dpi=dpi)
        svg_name = None
        if not _has_raster(fig):  # an SVG embeds rasters as base64 PNG: never the lighter file then
            buf = io.BytesIO()
            fig.savefig(buf, format="svg")
            if buf.tell() < png.stat().st_size:
                svg_name = f"{stem}.svg"
                (self.folder / svg_name).write_bytes(buf.getvalue())
        w, h = (int(round(v * dpi)) for v in fig.get_size_inches())
        fig.clear()
        rec = FigureRecord(png.name, svg_name, self.section, caption, w, h)
        self.figures.append(rec)
        return figure_html(rec.file, rec.svg, caption, w, h)


def _has_raster(fig: Any) -> bool:
    """True when the figure draws a raster image (``imshow``, thumbnails)."""
    from matplotlib.image import AxesImage, BboxImage, FigureImage

    return bool(fig.findobj(lambda a: isinstance(a, (AxesImage, BboxImage, FigureImage))))


# --------------------------------------------------------------------------- inputs
def _load_images(explainer: Any, images: Any) -> tuple[torch.Tensor, list[str]]:
    """``images`` (tensor / PIL / array / paths, or a list of them) -> (batch, display names)."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("images must hold at least one image")
    prepared, names = [], []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            image = open_image(item, mode="L" if _in_channels(explainer) == 1 else "RGB", argname=f"images[{i}]")
            batch = explainer.prepare(image, argname=f"images[{i}]")
            names.append(Path(item).name)
        else:
            batch = explainer.prepare(item, argname=f"images[{i}]" if len(items) > 1 else "images")
            names += [f"image {len(names) + j}" for j in range(batch.shape[0])]
        prepared.append(batch)
    shapes = {tuple(b.shape[1:]) for b in prepared}
    if len(shapes) > 1:
        raise ValueError(f"images must all have the same (C, H, W) after the transform; got {sorted(shapes)}")
    return torch.cat(prepared), names


def _settings_options(settings: ReportSettings | Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (a ReportSettings or a mapping) as keyword arguments, overridden by ``options``."""
    if settings is None:
        base: dict[str, Any] = {}
    elif isinstance(settings, ReportSettings):
        base = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    elif isinstance(settings, Mapping):
        base = dict(settings)
    else:
        raise TypeError(f"settings must be a ReportSettings, a mapping of its fields or None, "
                        f"got {type(settings).__name__}")
    return {**base, **options}


def _check_names(names: Sequence[str] | None, default: list[str]) -> list[str]:
    if names is None:
        return default
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError("names must be a sequence of strings, one per image")
    if len(names) != len(default):
        raise ValueError(f"names has {len(names)} entries for {len(default)} images; give one name per image")
    return [str(n) for n in names]


def _in_channels(explainer: Any) -> int | None:
    from ..roles import first_conv_module as first_conv

    conv = first_conv(explainer.model)
    return None if conv is None else conv.in_channels


# --------------------------------------------------------------------------- the job
def write_report(explainer: Any, images: Any, data: Any = None, out: str | os.PathLike = "report", *,
                 names: Sequence[str] | None = None, sections: Sequence[str] | None = None,
                 progress: bool = True, settings: ReportSettings | Mapping[str, Any] | None = None,
                 **options: Any) -> ReportResult:
    """Write an HTML report with every figure for ``images`` (and ``data``).

    The folder ``out`` gets ``index.html`` (plain HTML, inline CSS, no JavaScript;
    every class, layer and file name escaped), the figures beside it as PNG (and
    SVG where that file is smaller) and ``manifest.json``. Sections: model
    summary, predictions, feature maps, filters and activation maximization, the
    worked arithmetic of one output, occlusion / gradient / guided backprop /
    Grad-CAM per image, attribution methods side by side (gradient, Integrated
    Gradients, Grad-CAM and CAM-family methods), the sanity check, embeddings
    (PCA, t-SNE, UMAP; only with ``data``) and style transfer (only with ``style=``). A section whose inputs
    are missing is left out with a line saying why.

    Args:
        explainer: an :class:`~cnn_explain.Explainer` (``explain(model, class_names=...)``).
        images: the images to explain: an ``(N, C, H, W)`` tensor, a PIL image, an
            array, an image path, or a list of those (paths are shown by file name).
        data: a labelled data set for the embeddings section (anything
            :func:`cnn_explain.embedding.embed` takes), or None.
        out: the report folder. It is replaced atomically, and only when it is empty or
            a previous report holding nothing but the files its manifest lists; any
            other folder is never touched (``ValueError``, raised before any work; see
            :func:`check_out_folder`).
        names: display names, one per image (default: file names for paths, ``image i`` otherwise).
        sections: keys of the sections to build (default: all); see ``SECTIONS``.
        progress: show a progress bar over sections.
        settings: a :class:`ReportSettings`, or a mapping of its fields (default: all defaults).
        **options: :class:`ReportSettings` fields given one by one (they override ``settings``), e.g.
            ``occlusion_window=6``, ``embed_methods=("pca",)``,
            ``style={"content": img, "style": img2, "steps": 50}``.

    Returns:
        :class:`ReportResult` with ``.path`` (index.html), ``.manifest`` and ``.figures``.

    Raises:
        TypeError: an unknown setting.
        ValueError: bad images, names, settings, sections or ``out``. Any error of a
            capability propagates too, and nothing new is left at ``out``.

    Example:
        >>> ex = explain(model, class_names=names)            # doctest: +SKIP
        >>> ex.report(["cat.png", "dog.png"], out="report")  # doctest: +SKIP
    """
    from .sections import select_sections

    opts = ReportSettings.from_options(_settings_options(settings, options))
    chosen = select_sections(sections)
    out = check_out_folder(out)
    batch, default_names = _load_images(explainer, images)
    names = _check_names(names, default_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ctx = ReportContext(explainer, batch, names, data, opts, tmp, progress=progress)
        rendered, status = _build_sections(ctx, chosen)
        manifest = _manifest(ctx, status)
        meta = (f"{type(explainer.model).__name__} · {len(names)} image(s) · "
                f"{time.strftime('%Y-%m-%d %H:%M')} · cnn_explain {manifest['version']}")
        (tmp / "index.html").write_text(page(opts.title, meta, rendered), encoding="utf-8")
        manifest = strict_json(manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False), encoding="utf-8")
        os.chmod(tmp, 0o755)
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ReportResult(out / "index.html", manifest, list(ctx.figures))


def _build_sections(ctx: ReportContext, chosen: list[str]) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """Run each section's builder: ``(key, title, body html)`` for the page, a status entry for the manifest."""
    from .sections import SECTIONS

    rendered, status = [], []
    for i, key in enumerate(chosen, 1):
        title, builder = SECTIONS[key]
        if ctx.progress:  # one plain line per section (no cursor movement: readable in a piped log)
            print(f"report [{i}/{len(chosen)}] {title}{_section_note(ctx, key)}", file=sys.stderr, flush=True)
        ctx.section, start = key, time.perf_counter()
        try:
            body, info = builder(ctx), None
            if isinstance(body, tuple):
                body, info = body
            entry = {"included": True, "reason": None, "info": info or {}}
        except (Skip, ImportError) as why:
            reason = _skip_reason(why)
            body = skipped_html(reason)
            entry = {"included": False, "reason": reason, "info": {}}
        status.append({"key": key, "title": title, **entry, "seconds": round(time.perf_counter() - start, 3)})
        rendered.append((key, title, body))
    return rendered, status


def _section_note(ctx: ReportContext, key: str) -> str:
    """What a user waits for in this section, beyond its progress bars."""
    if key == "embeddings" and ctx.data is not None and "umap" in tuple(getattr(ctx.settings, "embed_methods", ())):
        return " (UMAP compiles its code once on first use: the first run may wait up to a minute)"
    return ""


def _skip_reason(why: Exception) -> str:
    """The reason for a skipped section; an ImportError counts only for a missing cnn_explain capability."""
    if isinstance(why, Skip):
        return str(why)
    if not (getattr(why, "name", None) or "").startswith("cnn_explain"):
        raise why
    return f"this capability is not available in this installation ({why})"


def _manifest(ctx: ReportContext, status: list[dict[str, Any]]) -> dict[str, Any]:
    from .. import __version__

    numbers = ctx.shared.get("summary_numbers")
    if numbers is None:
        from .sections import get_summary, summary_numbers

        numbers = summary_numbers(get_summary(ctx))
    return {
        "generator": GENERATOR,
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "model": {"class": type(ctx.model).__name__, **numbers},
        "images": list(ctx.names),
        "class_names": ctx.explainer.class_names,
        "settings": ctx.settings.to_dict(),
        "sections": status,
        "figures": [f.to_dict() for f in ctx.figures],
    }
