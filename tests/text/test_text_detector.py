"""Text -> an open-vocabulary detector's boxes -> SAM box prompts (issue 18, the detector route).

Small randomly initialised OWL-ViT and Grounding DINO models are built offline with tokenizers over vocabularies
written here and saved with `save_pretrained`, so nothing is downloaded. Checked: the boxes samflow prompts SAM with
are those of `transformers.pipeline("zero-shot-object-detection")` at the same threshold, one mask per box, labels
and scores kept; route selection in `samflow.segment`; errors for folders that are not detectors; the `detect.text`
node in a graph (Python API and `samflow run` of graphs/text_detect_segment.yaml); the service's path policy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from text_testing import SMALL_SAM, needs_shipped_clip, needs_shipped_text

from samflow.cli import main
from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image
from samflow.engine.types.detect import Detections, InstanceMasks
from samflow.engine.validation import GraphValidationError
from samflow.errors import CheckpointError, InputError
from samflow.models.sam import SamConfig
from samflow.predict.api import segment
from samflow.predict.segmenter import Segmenter
from samflow.predict.text_detector import detect_text, get_text_detector
from samflow.predict.textprompt import TextPromptsUnavailable

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "dog", "cat", "red", "star", "blue", "mug", "the", "photo", "of"]
TEXTS = ["a dog", "a red star"]


# ------------------------------------------------------------------------------------------------ tiny detectors


def _clip_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-pair vocabulary in which every word of WORDS is one token (CLIP's format: `</w>` ends a word)."""
    vocab: dict[str, int] = {}
    merges: list[str] = []
    for ch in "abcdefghijklmnopqrstuvwxyz!.":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the highest id: OWL-ViT pools the text at the argmax of its ids
    return vocab, merges


def build_owlvit(folder: Path) -> Path:
    vocab, merges = _clip_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!")
    assert len(tokenizer("a dog")["input_ids"]) == 4  # bos, a, dog, eos: the merges make words
    config = transformers.OwlViTConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": vocab["!"],
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32)
    torch.manual_seed(0)
    model = transformers.OwlViTForObjectDetection(config).eval()
    with torch.no_grad():  # random box heads put every box on the image's edge: keep them near their patches
        model.box_head.dense2.weight.mul_(0.002)
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformers.OwlViTImageProcessor(size={"height": 64, "width": 64},
                                      crop_size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def build_grounding_dino(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    text = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    backbone = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32, 64],
                                         depths=[1, 1, 1, 1], out_features=["stage2", "stage3", "stage4"])
    config = transformers.GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=12, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    torch.manual_seed(0)
    model = transformers.GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformers.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def owl_folder(tmp_path_factory) -> Path:
    return build_owlvit(tmp_path_factory.mktemp("detectors") / "owlvit")


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory) -> Path:
    return build_grounding_dino(tmp_path_factory.mktemp("detectors") / "grounding_dino")


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 80, (96, 128, 3), dtype=np.uint8)
    data[20:60, 30:90] = (200, 40, 40)
    return data


@pytest.fixture
def segmenter() -> Segmenter:
    return Segmenter(cache=EmbeddingCache(max_bytes=1 << 26))


def pipeline_detections(folder: Path, picture: np.ndarray, texts: list[str], threshold: float):
    detector = transformers.pipeline("zero-shot-object-detection", model=str(folder), device="cpu")
    found = detector(PILImage.fromarray(picture), candidate_labels=texts, threshold=threshold)
    boxes = np.array([[d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for d in found], np.float32)
    return boxes.reshape(-1, 4), np.array([d["score"] for d in found], np.float32), [d["label"] for d in found]


class DecoderCalls:
    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        self.handle = module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))

    def __enter__(self) -> DecoderCalls:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.remove()


# ------------------------------------------------------------------------------------------------ the detector


@pytest.mark.parametrize("which, threshold", [("owl_folder", 0.0), ("owl_folder", 0.1), ("dino_folder", 0.0),
                                              ("dino_folder", 0.5)])
def test_boxes_prompting_sam_are_the_pipelines(request, which, threshold, picture, segmenter):
    folder = request.getfixturevalue(which)
    want_boxes, want_scores, want_labels = pipeline_detections(folder, picture, TEXTS, threshold)
    assert len(want_boxes) > 0

    raw, scores, ids = get_text_detector(folder, "cpu").detect(picture, TEXTS, threshold, text_threshold=0.0)
    assert np.allclose(np.trunc(raw), want_boxes, atol=1)  # the pipeline gives int() of each coordinate
    assert np.allclose(scores, want_scores, atol=1e-5) and [TEXTS[i] for i in ids] == want_labels

    sam = segmenter.model("tiny", device="cpu")
    with DecoderCalls(sam.mask_decoder) as calls:
        result = segment(picture, text=TEXTS, model="tiny", device="cpu", detector=folder, box_threshold=threshold,
                         text_threshold=0.0, max_detections=1000, segmenter=segmenter)
    h, w = picture.shape[:2]
    clipped = np.stack([raw[:, 0].clip(0, w), raw[:, 1].clip(0, h), raw[:, 2].clip(0, w), raw[:, 3].clip(0, h)], 1)
    assert calls.n == 1  # every box in one batched decoder call
    assert len(result) == len(want_boxes) and result.masks.shape == (len(want_boxes), h, w)  # one mask per box
    assert np.allclose(result.prompts.boxes, clipped)  # the boxes clipped to the image, as every box prompt
    assert result.labels == want_labels and np.allclose(result.confidence, want_scores, atol=1e-5)
    annotations = result.to_coco()
    assert [a["label"] for a in annotations] == want_labels and "confidence" in annotations[0]


def test_grounding_dino_text_threshold_only_removes_boxes(dino_folder, picture):
    detector = get_text_detector(dino_folder, "cpu")
    every = detect_text(detector, picture, TEXTS, box_threshold=0.0, text_threshold=0.0)
    some = detect_text(detector, picture, TEXTS, box_threshold=0.0, text_threshold=0.9999)
    rows = {tuple(b) + (n,) for b, n in zip(every.xyxy.round(3).tolist(), every.names)}
    assert len(some) <= len(every) and all(tuple(b) + (n,) in rows
                                           for b, n in zip(some.xyxy.round(3).tolist(), some.names))
    capped = detect_text(detector, picture, TEXTS, box_threshold=0.0, text_threshold=0.0, max_detections=3)
    assert len(capped) == 3 and np.allclose(capped.scores, every.scores[:3])


def test_absent_objects_give_an_empty_result(owl_folder, picture, segmenter):
    result = segment(picture, text="a dog", model="tiny", device="cpu", detector=owl_folder, box_threshold=1.0,
                     segmenter=segmenter)
    assert len(result) == 0 and result.masks.shape == (0, *picture.shape[:2]) and result.labels == []
    assert result.to_coco() == [] and result.confidence.shape == (0,)
    assert "0 object(s)" in repr(result) and result.areas.shape == (0,)
    result.overlay()  # still draws: the picture alone


# ------------------------------------------------------------------------------------------------ routes


@needs_shipped_text
def test_without_a_detector_tiny_takes_its_prompt_adapter(picture, segmenter):
    # (presence check off: the picture holds no red star, and the route, not the check, is under test here)
    result = segment(picture, text="a red star", model="tiny", device="cpu", segmenter=segmenter,
                     presence_threshold=False)
    assert len(result) == 1 and result.labels == ["a red star"] and result.confidence is None


@needs_shipped_text
def test_a_detector_given_is_used_even_where_an_adapter_exists(owl_folder, picture, segmenter):
    result = segment(picture, text="a red star", model="tiny", device="cpu", detector=owl_folder,
                     box_threshold=0.0, segmenter=segmenter)
    assert len(result) > 1 and set(result.labels) == {"a red star"} and result.confidence is not None


def test_a_sam_without_adapter_names_the_three_routes(picture, segmenter):
    torch.manual_seed(0)
    with pytest.raises(TextPromptsUnavailable) as caught:
        segment(picture, text="a dog", model=SamConfig(**SMALL_SAM), device="cpu", segmenter=segmenter)
    message = str(caught.value)
    assert "(a) the prompt adapter" in message and "(b) detector=PATH" in message and "(c) clip=" in message
    assert 'pip install "samflow[detect]"' in message


def test_a_sam_without_adapter_takes_the_detector(owl_folder, picture, segmenter):
    result = segment(picture, text=["a dog"], model=SamConfig(**SMALL_SAM), device="cpu", detector=owl_folder,
                     box_threshold=0.0, max_detections=5, segmenter=segmenter)
    assert len(result) == 5 and result.labels == ["a dog"] * 5
    with pytest.raises(InputError, match="detector= turns the text into SAM prompts"):
        segment(picture, text="a dog", points=[[10, 10]], device="cpu", detector=owl_folder, segmenter=segmenter)


@needs_shipped_clip
@needs_shipped_text
def test_clip_ranks_the_automatic_masks(segmenter):
    from samflow.data.captions import caption
    from samflow.data.synthetic import render_scene, scene_rng
    from samflow.ops.metrics import mask_iou

    scene = render_scene(scene_rng(4242, 1))  # a held-out scene whose purple rectangle is unique
    index = next(i for i, a in enumerate(scene.annotations) if caption(a) == "a purple rectangle")
    result = segment(scene.image, text="a purple rectangle", model="tiny", device="cpu", clip="clip_tiny",
                     segmenter=segmenter)
    assert len(result) == 1 and result.labels == ["a purple rectangle"] and result.confidence.shape == (1,)
    assert mask_iou(result.masks[0], scene.masks[index]) > 0.5


# ------------------------------------------------------------------------------------------------ errors


def test_folders_that_are_not_detectors_are_named(tmp_path, picture):
    missing = tmp_path / "no_such_detector"
    with pytest.raises(CheckpointError, match=f"text detector folder not found: {missing}"):
        segment(picture, text="a dog", device="cpu", detector=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty} has no config.json"):
        get_text_detector(empty)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="holds a 'bert' model, not a zero-shot object detector"):
        get_text_detector(other / "config.json")
    broken = tmp_path / "owl_without_weights"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "owlvit"}))
    with pytest.raises(CheckpointError, match=f"{broken} does not load as a zero-shot object detector"):
        get_text_detector(broken)


def test_without_transformers_the_error_says_what_to_install(owl_folder, monkeypatch):
    from samflow.models.detection_text import load_text_detector

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    with pytest.raises(InputError, match=r'pip install "samflow\[detect\]"'):
        load_text_detector(owl_folder)


# ------------------------------------------------------------------------------------------------ the node


def test_detect_text_node_in_a_graph(owl_folder, picture, clip_file):
    g = Graph()
    image = g.input("image", Image)
    prompt = g.add("clip.text", "prompt", params={"text": ["a dog", "a cat"], "model": None,
                                                  "checkpoint": str(clip_file), "device": "cpu"})
    by_param = g.add("detect.text", "by_param", params={"detector": str(owl_folder), "texts": "a red star",
                                                        "box_threshold": 0.0, "max_detections": 4, "device": "cpu"},
                     image=image)
    by_input = g.add("detect.text", "by_input", params={"detector": str(owl_folder), "box_threshold": 0.0,
                                                        "device": "cpu"}, image=image, text=prompt.text)
    encoder = g.add("sam.encoder", "encoder", params={"model": "tiny", "device": "cpu"}, image=image)
    masks = g.add("detect.segment", "segment", embedding=encoder.embedding, detections=by_param.detections)
    g.output("found", by_param.detections)
    g.output("found_by_input", by_input.detections)
    g.output("masks", masks.masks)
    out = Scheduler(g).run(image=Image(picture))
    found, masks = out["found"], out["masks"]
    assert isinstance(found, Detections) and len(found) == 4 and found.names == ["a red star"] * 4
    assert isinstance(masks, InstanceMasks) and masks.data.shape == (4, 1, *picture.shape[:2])
    assert masks.names == found.names and np.allclose(masks.confidence, found.scores)
    assert set(out["found_by_input"].names) == {"a dog", "a cat"}
    with pytest.raises(GraphValidationError, match="param .texts.: a text detector needs at least one text"):
        g.add("detect.text", "bad", params={"detector": str(owl_folder), "texts": []}, image=image)


def test_the_graph_file_validates_and_runs(owl_folder, picture, tmp_path):
    graph = REPO / "graphs" / "text_detect_segment.yaml"
    assert main(["validate", str(graph)]) == 0
    images = tmp_path / "images"
    images.mkdir()
    PILImage.fromarray(picture).save(images / "scene.png")
    code = main(["run", str(graph), "--input", f"image={images}", "--out", str(tmp_path / "out"), "--no-progress",
                 "--set", f"detect.detector={owl_folder}", "--set", "detect.box_threshold=0.0",
                 "--set", "detect.max_detections=3", "--set", "encoder.device=cpu", "--set", "detect.device=cpu"])
    assert code == 0
    item = tmp_path / "out" / "scene"
    records = json.loads((item / "masks" / "text.json").read_text())
    assert len(records) == 3 and {r["label"] for r in records} == {"a dog"}
    assert all(0 <= r["confidence"] <= 1 and len(r["box"]) == 4 for r in records)
    assert (item / "overlay.png").is_file()


def test_the_service_reads_detector_folders_only_from_allowed_folders(owl_folder, tmp_path):
    pytest.importorskip("fastapi")
    from samflow.serve.errors import ApiError
    from samflow.serve.policy import GraphPolicy
    from samflow.serve.settings import ServiceSettings

    def check(settings: ServiceSettings, detector: str) -> str:
        g = Graph()
        g.add("detect.text", "detect", params={"detector": detector, "texts": "a dog"}, image=g.input("image", Image))
        GraphPolicy(settings, "cpu").check(g, {})
        return g.nodes["detect"].params.detector

    with pytest.raises(ApiError, match="param 'detector' names a file on the server"):
        check(ServiceSettings(), str(owl_folder))
    allowed = ServiceSettings(allow_dirs=(str(owl_folder.parent),))
    assert check(allowed, str(owl_folder / "config.json")) == str((owl_folder / "config.json").resolve())
    with pytest.raises(ApiError, match="no regular file"):
        check(allowed, str(owl_folder))  # a folder: named by its config.json over HTTP
