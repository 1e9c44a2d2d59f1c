"""Running a graph over the frames of a video (or a folder of frames), one frame at a time, in flat memory.

The graph takes each frame on its `Frame` (or `Image`) input; its other inputs are given once and shared by every
frame. Per frame the scheduler runs the graph and drops every value once consumed; what the frame produced is
written at once and nothing of it is kept, so memory does not grow with the number of frames:

    OUT/frames.jsonl            one line per frame: index, time, status, seconds, each output's record (or error)
    OUT/<output>/<frame>_<n>.png  the best mask of each prompt set, for each Masks output
    OUT/<output>/<frame>.png    each Image output; PointCloud outputs as <frame>_<n>.ply + <frame>.json
    OUT/frames/<frame>/...      files written by nodes themselves (masks.write, lift.write...), if any
    OUT/overlay.mp4             optional: the frames with the masks (and gaze points, boxes) drawn on them
    OUT/run.json                counts, seconds, per-node stats, the first errors

A frame that fails is recorded and the run goes on; a run whose frames keep failing with the same error stops
(`abort_after` in a row), since that is a broken graph or input rather than a bad frame.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image, Masks, Payload, Points
from samflow.engine.types.geometry import PointCloud
from samflow.engine.types.video import Frame, Gaze
from samflow.errors import InputError, NodeError, SamflowError

log = logging.getLogger(__name__)

RECORDS = "frames.jsonl"
MANIFEST = "run.json"
MAX_LOGGED_ERRORS = 20


def frame_input(graph: Graph) -> str:
    """The graph input that takes the frames: its only Frame input, else its only Image input."""
    for wanted in (Frame, Image):
        names = [name for name, payload in graph.inputs.items() if payload is wanted]
        if len(names) == 1:
            return names[0]
        if len(names) > 1:
            raise InputError(f"the graph has several {wanted.type_name} inputs ({', '.join(names)}); say which takes "
                             "the frames")
    raise InputError(f"the graph has no Frame or Image input to feed frames to (inputs: "
                     f"{', '.join(f'{n}: {t.type_name}' for n, t in graph.inputs.items()) or 'none'})")


@dataclass
class FrameResult:
    """One frame's outcome: status 'ok' or 'failed', its graph outputs (held only until the next frame)."""

    index: int
    time: float | None
    status: str
    outputs: dict[str, Payload] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class VideoReport:
    frames: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    overlay: Path | None = None
    stopped: str | None = None


class VideoRunner:
    """Runs `scheduler`'s graph frame by frame into `out_dir`.

    shared: values of the graph's other inputs (paths or payloads), read once. overlay: write OUT/overlay.mp4 of
    the first Masks output (True) or of the named output. fps: the overlay's frame rate (default the source's).
    """

    def __init__(self, scheduler: Scheduler, out_dir: str | Path, *, input_name: str | None = None,
                 shared: Mapping[str, Any] | None = None, overlay: bool | str = False, fps: float | None = None,
                 abort_after: int = 10) -> None:
        self.scheduler = scheduler
        graph = scheduler.graph
        self.input_name = input_name or frame_input(graph)
        if self.input_name not in graph.inputs:
            raise InputError(f"the graph has no input '{self.input_name}' (inputs: {', '.join(graph.inputs)})")
        shared = dict(shared or {})
        missing = [name for name in graph.inputs if name != self.input_name and name not in shared]
        if missing:
            raise InputError(f"give the graph's other input(s) {', '.join(missing)} (shared by every frame)")
        # Coerced once: a shared file is read once, not once per frame.
        self.shared = {name: graph.inputs[name].coerce(value) for name, value in shared.items()}
        self.out = Path(out_dir)
        self.overlay = overlay
        self.fps = fps
        self.abort_after = abort_after
        self.report = VideoReport()

    # ----------------------------------------------------------------- running

    def run(self, frames: Iterable[Frame], progress: bool | None = None) -> VideoReport:
        """Run every frame; return the report (also in OUT/run.json)."""
        from tqdm import tqdm

        total = getattr(frames, "frame_count", None)
        bar = tqdm(total=total, unit="frame", disable=None if progress is None else not progress)
        for _ in self.iter_frames(frames):
            bar.update()
        bar.close()
        return self.report

    def iter_frames(self, frames: Iterable[Frame]) -> Iterator[FrameResult]:
        """Run and write frame after frame, yielding each result (its outputs are dropped at the next frame)."""
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        writer = None
        repeated, last_error = 0, None
        try:
            with (self.out / RECORDS).open("w") as records:
                for frame in frames:
                    result = self._run_frame(frame)
                    line = {"frame": result.index, "time": result.time, "status": result.status,
                            "seconds": round(result.seconds, 6)}
                    if result.status == "ok":
                        line["outputs"] = self._save(result)
                    else:
                        line["error"] = result.error
                    if self.overlay:  # a failed frame shows as it is, so the overlay keeps the source's timing
                        writer = writer or self._overlay_writer(frames)
                        ok = result.status == "ok"
                        writer.write(self._overlay_picture(frame, result.outputs) if ok else frame.data)
                    records.write(json.dumps(line) + "\n")
                    yield result
                    del result  # the generator's frame would otherwise keep the last outputs alive
                    # Stop a run whose every frame fails alike (a broken graph or input), not one with bad frames.
                    error = _general(line.get("error"))
                    repeated = repeated + 1 if error is not None and error == last_error else int(error is not None)
                    last_error = error
                    if repeated >= self.abort_after:
                        self.report.stopped = f"stopped after {repeated} frames in a row failed with: {line['error']}"
                        raise NodeError(self.report.stopped)
        finally:
            if writer is not None:
                writer.close()
                self.report.overlay = writer.path
            self.report.seconds = time.perf_counter() - started
            self._write_manifest()

    def _run_frame(self, frame: Frame) -> FrameResult:
        started = time.perf_counter()
        item_id = f"{frame.index:06d}"
        try:
            outputs = self.scheduler.run({**self.shared, self.input_name: frame}, item_id=item_id,
                                         output_dir=self.out / "frames" / item_id)
        except SamflowError as exc:
            log.debug("frame %d failed", frame.index, exc_info=True)
            return self._count(FrameResult(frame.index, frame.time, "failed", error=str(exc),
                                           seconds=time.perf_counter() - started))
        return self._count(FrameResult(frame.index, frame.time, "ok", outputs, seconds=time.perf_counter() - started))

    def _count(self, result: FrameResult) -> FrameResult:
        report = self.report
        report.frames += 1
        if result.status == "ok":
            report.ok += 1
        else:
            report.failed += 1
            if len(report.errors) < MAX_LOGGED_ERRORS:
                report.errors.append({"frame": result.index, "error": result.error})
            log.warning("frame %d failed: %s", result.index, result.error)
        return result

    # ----------------------------------------------------------------- writing

    def _save(self, result: FrameResult) -> dict[str, Any]:
        stem = f"{result.index:06d}"
        records: dict[str, Any] = {}
        for name, payload in result.outputs.items():
            folder = self.out / name
            if isinstance(payload, Masks):
                records[name] = _save_masks(payload, folder, stem)
            elif isinstance(payload, Image):
                from PIL import Image as PILImage

                folder.mkdir(exist_ok=True)
                PILImage.fromarray(payload.data).save(folder / f"{stem}.png", compress_level=1)
                records[name] = {"file": f"{name}/{stem}.png"}
            elif isinstance(payload, PointCloud):
                folder.mkdir(exist_ok=True)
                files = payload.save(folder, stem)
                records[name] = {**payload.to_record(), "files": [f"{name}/{p.name}" for p in files]}
            else:
                records[name] = payload.to_record()
        return records

    def _overlay_writer(self, frames: Iterable[Frame]) -> Any:
        from samflow.data.frames import VideoWriter

        fps = self.fps or getattr(frames, "fps", None) or 30.0
        return VideoWriter(self.out / "overlay.mp4", fps)

    def _overlay_picture(self, frame: Frame, outputs: Mapping[str, Payload]) -> np.ndarray:
        from samflow.ops.draw import draw_overlay

        masks = self._overlay_masks(outputs)
        points = next((p for p in outputs.values() if isinstance(p, Points)), None)
        gaze = next((g for g in outputs.values() if isinstance(g, Gaze) and g.usable), None)
        if points is None and gaze is not None:  # show where the wearer looked
            points = Points([[gaze.x, gaze.y]], [1])
        boxes = getattr(masks, "boxes", None)
        if masks is None:
            return frame.data
        shown = points is not None and len(points)
        return draw_overlay(frame.data, masks.best()[:, None], points.coords if shown else None,
                            points.labels if shown else None, boxes if boxes is not None and len(boxes) else None)

    def _overlay_masks(self, outputs: Mapping[str, Payload]) -> Masks | None:
        if isinstance(self.overlay, str):
            chosen = outputs.get(self.overlay)
            if not isinstance(chosen, Masks):
                raise InputError(f"overlay: the graph has no Masks output '{self.overlay}' (outputs: "
                                 f"{', '.join(outputs)})")
            return chosen
        return next((p for p in outputs.values() if isinstance(p, Masks)), None)

    def _write_manifest(self) -> None:
        report = self.report
        manifest = {
            "graph": self.scheduler.graph.source,
            "frame_input": self.input_name,
            "frames": report.frames, "ok": report.ok, "failed": report.failed,
            "seconds": round(report.seconds, 6),
            "stopped": report.stopped,
            "records": RECORDS,
            "overlay": report.overlay.name if report.overlay else None,
            "nodes": self.scheduler.stats_dict(),
            "errors": report.errors,
        }
        tmp = self.out / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(self.out / MANIFEST)


def _save_masks(masks: Masks, folder: Path, stem: str) -> list[dict[str, Any]]:
    """The best mask of each set as `<stem>_<n>.png` (0/255), and its record (with the file name)."""
    from PIL import Image as PILImage

    best = masks.best()
    index = np.argmax(masks.scores, axis=1) if masks.scores is not None and masks.data.shape[1] > 1 else \
        np.zeros(len(masks), np.int64)
    by_key = {(r["set"], r["index"]): r for r in masks.records()}
    out = []
    if len(masks):
        folder.mkdir(exist_ok=True)
    for n in range(len(masks)):
        file = folder / f"{stem}_{n}.png"
        PILImage.fromarray(best[n].astype(np.uint8) * 255).save(file, compress_level=1)
        out.append({**by_key[(n, int(index[n]))], "file": f"{folder.name}/{file.name}"})
    return out


def _general(error: str | None) -> str | None:
    """An error message without the frame it happened on, to tell one error repeating from different ones."""
    return None if error is None else re.sub(r"item '\d+'", "item", error)


def run_video(graph: Graph, frames: Iterable[Frame], out_dir: str | Path, *, shared: Mapping[str, Any] | None = None,
              overlay: bool | str = False, fps: float | None = None, cache_bytes: int = 0,
              progress: bool | None = None) -> VideoReport:
    """Run `graph` over `frames` into `out_dir` (see the module doc). `cache_bytes`: the in-memory embedding cache
    (0 by default: frames rarely repeat, and a cache would grow with the video up to its budget)."""
    from samflow.engine.cache import EmbeddingCache

    with Scheduler(graph, cache=EmbeddingCache(max_bytes=cache_bytes)) as scheduler:
        runner = VideoRunner(scheduler, out_dir, shared=shared, overlay=overlay, fps=fps)
        return runner.run(frames, progress=progress)


__all__ = ["FrameResult", "VideoReport", "VideoRunner", "frame_input", "run_video"]
