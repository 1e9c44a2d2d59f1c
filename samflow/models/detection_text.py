"""Open-vocabulary (zero-shot) detectors from a local Hugging Face model folder: OWL-ViT, OWLv2, Grounding DINO.

    detector = load_text_detector("models/owlv2-base-patch16-ensemble")       # a folder on disk; nothing downloaded
    boxes, scores, text_ids = detector.detect(rgb, ["a dog", "a red mug"], box_threshold=0.1)

The folder is what `save_pretrained` (or `huggingface-cli download --local-dir`) writes: config.json, the weights,
the tokenizer and preprocessor_config.json. Everything is read with `local_files_only=True` and no remote code.

Results equal `transformers.pipeline("zero-shot-object-detection", model=folder)` at the same threshold: each text is
tokenised on its own as the pipeline does, and the boxes and scores come from transformers' own post-processing
(`post_process_object_detection` of the image processor, and for Grounding DINO its processor's
`post_process_grounded_object_detection`, which also applies `text_threshold`). Every box is reported once per text
that scores it above the threshold, best scores first. OWL-ViT and OWLv2 predict their boxes from the image alone,
so all texts go through one forward pass; Grounding DINO selects its queries by the text, so it runs once per text.

transformers is optional (`pip install "samflow[detect]"`); it is imported only when a detector is loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from samflow.errors import CheckpointError, InputError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "samflow[detect]"'
# model_type (config.json) -> family: what decides how texts are batched and which post-processing applies.
FAMILIES = {"owlvit": "owl", "owlv2": "owl", "grounding-dino": "grounding_dino"}
# Box thresholds when none is given: the pipeline's default for OWL, the authors' for Grounding DINO.
DEFAULT_BOX_THRESHOLD = {"owl": 0.1, "grounding_dino": 0.35}
DEFAULT_TEXT_THRESHOLD = 0.25  # Grounding DINO only: a box must match a token of its text at least this well


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise InputError(f"open-vocabulary detectors need the transformers package: {INSTALL_HINT}") from exc
    return transformers


def model_folder(path: str | Path) -> Path:
    """The model folder named by `path` (a folder, or its config.json); CheckpointError when it is not one."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"text detector folder not found: {path} (a local Hugging Face model folder with "
                              "config.json, the weights, tokenizer and preprocessor files; nothing is downloaded)")
    if not path.is_dir():
        raise CheckpointError(f"text detector {path} is a file; give the Hugging Face model folder (or its "
                              "config.json)")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"text detector folder {path} has no config.json: not a Hugging Face model folder")
    return path


def detector_family(folder: Path) -> str:
    """'owl' or 'grounding_dino' from the folder's config.json; CheckpointError for other models."""
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"text detector folder {folder}: config.json is not readable JSON: {exc}") from None
    family = FAMILIES.get(model_type)
    if family is None:
        raise CheckpointError(f"text detector folder {folder} holds a {model_type!r} model, not a zero-shot object "
                              f"detector samflow runs ({', '.join(FAMILIES)})")
    return family


class TextDetector:
    """A loaded zero-shot detector: `detect(rgb, texts)` -> boxes, scores and the index of the text of each box."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, family: str, path: Path,
                 processor: Any = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = processor  # Grounding DINO's processor (its grounded post-processing), else None
        self.family = family
        self.path = path

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def _max_tokens(self) -> int | None:
        config = self.model.config
        if self.family == "grounding_dino":
            return int(config.max_text_len)
        return int(getattr(getattr(config, "text_config", None), "max_position_embeddings", 0)) or None

    def _tokens(self, texts: list[str]) -> dict[str, Any]:
        limit = self._max_tokens()
        padding = len(texts) > 1
        return dict(self.tokenizer(texts if padding else texts[0], return_tensors="pt", padding=padding,
                                   truncation=limit is not None, max_length=limit))

    def detect(self, rgb: np.ndarray, texts: list[str], box_threshold: float | None = None,
               text_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes float32 (N, 4) xyxy in `rgb`'s pixels, scores float32 (N,), text_ids int64 (N,)) for one uint8
        (H, W, 3) image, best first (ties in text order). A box is kept when its score for a text is above
        `box_threshold` (default DEFAULT_BOX_THRESHOLD of the family); for Grounding DINO, also when one token of
        that text scores above `text_threshold` (default DEFAULT_TEXT_THRESHOLD; ignored by OWL models)."""
        import torch
        from PIL import Image as PILImage

        if not texts:
            raise InputError("a text detector needs at least one text")
        if box_threshold is None:
            box_threshold = DEFAULT_BOX_THRESHOLD[self.family]
        if text_threshold is None:
            text_threshold = DEFAULT_TEXT_THRESHOLD
        rgb = np.ascontiguousarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"a text detector takes a uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        target = torch.tensor([[h, w]], dtype=torch.int32)  # as the pipeline gives it
        device, dtype = self.device, self.model.dtype
        pixels = self.image_processor(PILImage.fromarray(rgb), return_tensors="pt")
        pixels = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in pixels.items()}
        found: list[tuple[np.ndarray, np.ndarray, int]] = []
        with torch.inference_mode():
            if self.family == "owl":
                tokens = {k: v.to(device) for k, v in self._tokens(list(texts)).items()}
                outputs = self.model(**tokens, **pixels)
                for i in range(len(texts)):  # each text post-processed on its own, as the pipeline does
                    one = _Outputs(logits=outputs.logits[..., i : i + 1], pred_boxes=outputs.pred_boxes)
                    result = self.image_processor.post_process_object_detection(
                        one, threshold=box_threshold, target_sizes=target)[0]
                    found.append((result["boxes"], result["scores"], i))
            else:
                special = set(self.tokenizer.all_special_tokens)
                for i, text in enumerate(texts):
                    tokens = {k: v.to(device) for k, v in self._tokens([text]).items()}
                    outputs = self.model(**tokens, **pixels)
                    result = self.processor.post_process_grounded_object_detection(
                        outputs, tokens["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
                        target_sizes=target)[0]
                    matched = torch.tensor([_has_words(label, special) for label in result["text_labels"]],
                                           dtype=torch.bool, device=result["scores"].device)
                    found.append((result["boxes"][matched], result["scores"][matched], i))
        boxes = [b.float().cpu().numpy().reshape(-1, 4) for b, _, _ in found]
        scores = [s.float().cpu().numpy().reshape(-1) for _, s, _ in found]
        ids = [np.full(len(s), i, dtype=np.int64) for s, (_, _, i) in zip(scores, found)]
        all_boxes = np.concatenate(boxes).astype(np.float32)
        all_scores = np.concatenate(scores).astype(np.float32)
        all_ids = np.concatenate(ids)
        order = np.argsort(-all_scores, kind="stable")  # the pipeline's order: by score, then text, then query
        return all_boxes[order], all_scores[order], all_ids[order]


class _Outputs(dict):
    """The two fields of a detector's output that post_process_object_detection reads."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _has_words(label: str, special: set[str]) -> bool:
    """Whether a phrase Grounding DINO's post-processing decoded holds a token of the text (not only [SEP]...)."""
    return any(word not in special for word in label.split())


def load_text_detector(path: str | Path, device: str = "cpu") -> TextDetector:
    """A zero-shot detector from a local Hugging Face model folder (or its config.json), in eval mode on `device`.

    Refuses what is not one, naming the path: a missing folder, no config.json, another kind of model, files that
    do not load (CheckpointError); transformers not installed (InputError, with the pip command).
    """
    folder = model_folder(path)
    family = detector_family(folder)
    transformers = _transformers()
    options = {"local_files_only": True, "trust_remote_code": False}
    try:
        model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(str(folder), **options)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **options)
        image_processor = transformers.AutoImageProcessor.from_pretrained(str(folder), **options)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # missing files, weights of another shape...
        raise CheckpointError(f"text detector folder {folder} does not load as a zero-shot object detector: "
                              f"{exc}") from None
    processor = None
    if family == "grounding_dino":
        processor = transformers.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    log.debug("loaded %s text detector from %s", family, folder)
    return TextDetector(model.eval().to(device), tokenizer, image_processor, family, folder, processor)


__all__ = ["DEFAULT_BOX_THRESHOLD", "DEFAULT_TEXT_THRESHOLD", "TextDetector", "detector_family",
           "load_text_detector", "model_folder"]
