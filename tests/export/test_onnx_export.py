"""ONNX export (issue 19): decoder.onnx with the official interface, encoder.onnx, the int8 decoder, the command.

onnxruntime runs the exported graphs against (a) samflow's torch prompt encoder, mask decoder and postprocessing,
(b) the official export (segment_anything.utils.onnx.SamOnnxModel) of the official model holding the same
weights, at the official example size where the official graph is right, and at other sizes where samflow's
stays right; (c) the interface; (d) the encoder; (e) the command; (f) the int8 decoder's agreement.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from samflow.cli import main
from samflow.errors import InputError
from samflow.export import (
    BROWSER_DECODER_INPUTS,
    BROWSER_DECODER_OUTPUTS,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ExportError,
    checks,
    export_browser_decoder,
    export_browser_factored,
    export_decoder,
    export_encoder,
    export_onnx,
)
from samflow.export.onnx import EXAMPLE_IMAGE_SIZE, decoder_example
from samflow.export.runtime import session
from samflow.models.sam import PRESETS, Sam, SamConfig, build_sam
from samflow.ops.transforms import preprocess_shape

TOL = 1e-4  # relative: max |onnx - torch| / max |torch|
EXAMPLE = (int(EXAMPLE_IMAGE_SIZE[0]), int(EXAMPLE_IMAGE_SIZE[1]))  # (1500, 2250), what the graphs are traced at
LANDSCAPE, PORTRAIT = (480, 640), (800, 534)  # other sizes, with other resized crops at 256 px than the example's
KINDS = ("click", "clicks", "box", "box_click", "mask")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """torch on one thread: the checks alternate torch with onnxruntime, and two OpenMP threads on two shared
    cores can make every small op wait for a time slice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------- helpers


def rel(actual: np.ndarray, expected: np.ndarray | torch.Tensor) -> float:
    expected = expected.numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return checks.relative_difference(actual, expected)


def assert_same_masks(logits: np.ndarray, expected: np.ndarray | torch.Tensor) -> float:
    """Masks (logits > 0) equal, except where the expected logit lies within float rounding of the threshold
    (the largest logit difference); returns the fraction of pixels that agree."""
    expected = expected.numpy() if isinstance(expected, torch.Tensor) else expected
    rounding = float(np.abs(logits - expected).max())
    differ = (logits > 0) != (expected > 0)
    assert np.all(np.abs(expected[differ]) <= rounding), "masks differ away from the threshold"
    return 1.0 - float(differ.mean())


def make_feed(config: SamConfig, kind: str, size: tuple[int, int], seed: int = 0,
              n_points: int | None = None) -> dict[str, np.ndarray]:
    """Decoder inputs in the official interface (the embedding aside), coordinates in the resized frame."""
    rng = np.random.default_rng(seed)
    h, w = preprocess_shape(*size, config.image_size)
    low = 4 * config.embedding_size

    def points(n: int) -> np.ndarray:
        return np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], -1).astype(np.float32)

    box = np.sort(points(2), axis=0)
    pad = (np.zeros((1, 2), np.float32), np.array([-1.0], np.float32))
    mask, has_mask = np.zeros((1, 1, low, low), np.float32), np.zeros(1, np.float32)
    if n_points is not None:  # n clicks, then the padding point
        parts = [(points(n_points), rng.integers(0, 2, n_points).astype(np.float32)), pad]
    elif kind == "click":
        parts = [(points(1), np.ones(1, np.float32)), pad]
    elif kind == "clicks":
        parts = [(points(3), np.array([1, 0, 1], np.float32)), pad]
    elif kind == "box":
        parts = [(box, np.array([2, 3], np.float32))]
    elif kind == "box_click":
        parts = [(points(1), np.zeros(1, np.float32)), (box, np.array([2, 3], np.float32))]
    else:  # a click refined with the previous low-res logits, as the official notebook does
        parts = [(points(1), np.ones(1, np.float32)), pad]
        yy, xx = np.mgrid[0:low, 0:low]
        mask[0, 0] = 6.0 - 12.0 * np.hypot(yy - low / 2, xx - low / 3) / low
        has_mask[0] = 1.0
    return {"point_coords": np.concatenate([p for p, _ in parts])[None],
            "point_labels": np.concatenate([lab for _, lab in parts])[None],
            "mask_input": mask, "has_mask_input": has_mask, "orig_im_size": np.array(size, np.float32)}


@torch.no_grad()
def torch_reference(model: Sam, embedding: torch.Tensor, feed: dict[str, np.ndarray],
                    multimask: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the graph must compute, from samflow's own modules: the prompt encoder (points padded when there is
    no box), the mask decoder, `Sam.postprocess_masks`. Single mask: the official choice, i.e. the best of the
    multimask outputs by predicted IoU for up to two points (padding included), else the single-mask output."""
    coords, labels = torch.from_numpy(feed["point_coords"]), torch.from_numpy(feed["point_labels"])
    is_box = (labels == 2) | (labels == 3)
    is_point = ~is_box & (labels != -1)
    points = (coords[is_point][None], labels[is_point][None]) if is_point.any() else None
    boxes = coords[is_box].reshape(1, 4) if is_box.any() else None
    masks = torch.from_numpy(feed["mask_input"]) if feed["has_mask_input"][0] else None
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    pe = model.prompt_encoder.get_dense_pe()
    if multimask:  # every mask token: the single-mask output, then the three multimask ones
        single = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=False)
        multi = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)
        low, iou = torch.cat([single[0], multi[0]], 1), torch.cat([single[1], multi[1]], 1)
    elif coords.shape[1] <= 2:
        low, iou = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)
        best = iou.argmax(1)
        low, iou = low[:, best], iou[:, best]
    else:
        low, iou = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=False)
    size = tuple(int(s) for s in feed["orig_im_size"])
    upscaled = model.postprocess_masks(low, preprocess_shape(*size, model.config.image_size), size)
    return upscaled, iou, low


def run(sess, embedding: torch.Tensor, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(DECODER_OUTPUTS, sess.run(list(DECODER_OUTPUTS), checks.with_embedding(feed, embedding))))


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ours(twins) -> Sam:
    return twins[0]


@pytest.fixture(scope="module")
def embedding(ours) -> torch.Tensor:
    return checks.sample_embedding(ours)


@pytest.fixture(scope="module")
def decoders(ours, tmp_path_factory) -> dict[bool, object]:
    """samflow's decoder.onnx, single-mask (False) and multimask (True), with their export results."""
    out = tmp_path_factory.mktemp("decoders")
    exports = {mm: export_decoder(ours, out / f"decoder_{mm}.onnx", multimask=mm, verify=False) for mm in (False, True)}
    return {mm: (result, session(result.path)) for mm, result in exports.items()}


@pytest.fixture(scope="module")
def official_decoders(twins, tmp_path_factory) -> dict[bool, object]:
    """The official export of the official model (same weights), traced at the official example size."""
    from segment_anything.utils.onnx import SamOnnxModel

    out = tmp_path_factory.mktemp("official")
    sessions = {}
    for multimask in (False, True):
        model = SamOnnxModel(twins[1], return_single_mask=not multimask)
        path = out / f"official_{multimask}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, decoder_example(twins[0].config), str(path), dynamo=False, opset_version=17,
                              do_constant_folding=True, input_names=list(DECODER_INPUTS),
                              output_names=list(DECODER_OUTPUTS),
                              dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
        sessions[multimask] = session(path)
    return sessions


# ----------------------------------------------------------------------- (a) onnxruntime against samflow's torch


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
@pytest.mark.parametrize("kind", KINDS)
def test_decoder_equals_torch(ours, embedding, decoders, kind, multimask):
    for size in (LANDSCAPE, PORTRAIT, EXAMPLE):
        feed = make_feed(ours.config, kind, size, seed=KINDS.index(kind))
        got = run(decoders[multimask][1], embedding, feed)
        masks, iou, low = torch_reference(ours, embedding, feed, multimask)
        assert rel(got["low_res_masks"], low) < TOL, (kind, size)
        assert rel(got["iou_predictions"], iou) < TOL, (kind, size)
        assert rel(got["masks"], masks) < TOL, (kind, size)
        assert got["masks"].shape == (1, 4 if multimask else 1, *size)
        assert_same_masks(got["masks"], masks)


def test_single_mask_is_chosen_as_the_official_export_chooses(ours, embedding, decoders):
    """One click (+ padding) or a lone box: the best multimask output; three points or more: the single one."""
    _, single = decoders[False]
    _, multi = decoders[True]
    for kind, expect_multimask in (("click", True), ("box", True), ("clicks", False), ("box_click", False)):
        feed = make_feed(ours.config, kind, LANDSCAPE)
        one, every = run(single, embedding, feed), run(multi, embedding, feed)
        index = 1 + int(np.argmax(every["iou_predictions"][0, 1:])) if expect_multimask else 0
        np.testing.assert_allclose(one["iou_predictions"][0], every["iou_predictions"][0, index:index + 1], rtol=TOL)
        assert rel(one["low_res_masks"][0, 0], every["low_res_masks"][0, index]) < TOL


# ---------------------------------------------------------- (b) against the official export, same weights


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
def test_decoder_equals_the_official_export_at_its_example_size(ours, embedding, decoders, official_decoders,
                                                                 multimask):
    for kind in KINDS:
        feed = make_feed(ours.config, kind, EXAMPLE, seed=7)
        got = run(decoders[multimask][1], embedding, feed)
        official = run(official_decoders[multimask], embedding, feed)
        assert rel(got["low_res_masks"], official["low_res_masks"]) < TOL, kind
        assert rel(got["iou_predictions"], official["iou_predictions"]) < TOL, kind
        assert rel(got["masks"], official["masks"]) < TOL, kind
        assert_same_masks(got["masks"], official["masks"])


def test_masks_stay_right_at_other_sizes_where_the_official_export_crops_wrongly(ours, embedding, decoders,
                                                                                  official_decoders):
    """The official graph keeps the example image's crop (171 x 256 of the 256 px input here); samflow's
    computes the crop from orig_im_size, so its masks match torch at every size."""
    official_agreement = {}
    for size in (LANDSCAPE, PORTRAIT, (3, 1000), (1000, 3), (37, 1111)):
        feed = make_feed(ours.config, "click", size, seed=3)
        masks, _, low = torch_reference(ours, embedding, feed, multimask=False)
        got = run(decoders[False][1], embedding, feed)
        official = run(official_decoders[False], embedding, feed)
        assert rel(got["masks"], masks) < TOL, size
        assert_same_masks(got["masks"], masks)
        assert rel(official["low_res_masks"], low) < TOL  # same network: only the crop differs
        official_agreement[size] = float(((official["masks"] > 0) == (masks.numpy() > 0)).mean())
    assert official_agreement[PORTRAIT] < 0.99, official_agreement  # the bug samflow's export does not have


# ------------------------------------------------------------------------------------ (c) the interface


def test_decoder_interface_names_dtypes_shapes(ours, decoders):
    grid, low = ours.config.embedding_size, 4 * ours.config.embedding_size
    for multimask, (result, sess) in decoders.items():
        k = 4 if multimask else 1
        assert result.input_names == DECODER_INPUTS and result.output_names == DECODER_OUTPUTS
        declared = {t.name: (t.dtype, t.shape) for t in (*result.inputs, *result.outputs)}
        assert declared == {
            "image_embeddings": ("float32", (1, 256, grid, grid)),
            "point_coords": ("float32", (1, "num_points", 2)),
            "point_labels": ("float32", (1, "num_points")),
            "mask_input": ("float32", (1, 1, low, low)),
            "has_mask_input": ("float32", (1,)),
            "orig_im_size": ("float32", (2,)),
            "masks": ("float32", (1, k, "image_height", "image_width")),
            "iou_predictions": ("float32", (1, k)),
            "low_res_masks": ("float32", (1, k, low, low)),
        }
        assert [i.name for i in sess.get_inputs()] == list(DECODER_INPUTS)
        assert all(i.type == "tensor(float)" for i in (*sess.get_inputs(), *sess.get_outputs()))


@pytest.mark.parametrize("n_points", [1, 3, 7])
def test_any_number_of_points(ours, embedding, decoders, n_points):
    for multimask, (_, sess) in decoders.items():
        feed = make_feed(ours.config, "", PORTRAIT, seed=n_points, n_points=n_points)
        assert feed["point_coords"].shape == (1, n_points + 1, 2)
        got = run(sess, embedding, feed)
        masks, iou, low = torch_reference(ours, embedding, feed, multimask)
        k = 4 if multimask else 1
        assert got["masks"].shape == (1, k, *PORTRAIT) and got["iou_predictions"].shape == (1, k)
        assert got["low_res_masks"].shape == (1, k, 4 * ours.config.embedding_size, 4 * ours.config.embedding_size)
        assert rel(got["low_res_masks"], low) < TOL and rel(got["iou_predictions"], iou) < TOL
        assert_same_masks(got["masks"], masks)


def test_stability_score_variant(ours, embedding, tmp_path):
    result = export_decoder(ours, tmp_path / "decoder.onnx", multimask=True, use_stability_score=True)
    feed = make_feed(ours.config, "click", LANDSCAPE)
    got = run(session(result.path), embedding, feed)
    from samflow.ops.amg import stability_score

    _, _, low = torch_reference(ours, embedding, feed, multimask=True)
    np.testing.assert_allclose(got["iou_predictions"], stability_score(low, 0.0, 1.0).numpy(), atol=1e-6)
    assert max(result.max_relative_difference.values()) < TOL


def test_browser_decoder_is_the_multimask_decoder_before_upscaling(ours, embedding, tmp_path):
    """The app's decoder: no orig_im_size, out the three ambiguity-aware masks' scores and low-res logits, equal to
    torch's (and so to decoder.onnx's masks 1-3 before their upscaling), for any number of points; int8 measured."""
    result = export_browser_decoder(ours, tmp_path / "browser_decoder.onnx", quantize=True)
    assert max(result.max_relative_difference.values()) < TOL and result.multimask
    low = 4 * ours.config.embedding_size
    declared = {t.name: (t.dtype, t.shape) for t in (*result.inputs, *result.outputs)}
    assert tuple(t.name for t in result.inputs) == BROWSER_DECODER_INPUTS == DECODER_INPUTS[:-1]
    assert tuple(t.name for t in result.outputs) == BROWSER_DECODER_OUTPUTS
    assert declared["iou_predictions"] == ("float32", (1, 3))
    assert declared["low_res_masks"] == ("float32", (1, 3, low, low))
    assert declared["point_coords"] == ("float32", (1, "num_points", 2))
    sess = session(result.path)
    for n, kind in enumerate(KINDS + ("", "")):
        feed = make_feed(ours.config, kind, PORTRAIT, seed=n, n_points=5 * n if not kind else None)
        del feed["orig_im_size"]
        iou, low_res = sess.run(list(BROWSER_DECODER_OUTPUTS), checks.with_embedding(feed, embedding))
        feed["orig_im_size"] = np.array(PORTRAIT, np.float32)
        _, want_iou, want_low = torch_reference(ours, embedding, feed, multimask=True)
        assert rel(low_res, want_low[:, 1:]) < TOL and rel(iou, want_iou[:, 1:]) < TOL, kind
    agreement = result.quantized.agreement
    assert agreement.prompts >= 10 and agreement.pixel_agreement > 0.98 and agreement.mean_iou > 0.95
    int8 = session(result.quantized.path)
    assert [i.name for i in int8.get_inputs()] == list(BROWSER_DECODER_INPUTS)


def test_factored_browser_decoder_equals_the_browser_decoder_without_a_mask_input(ours, embedding, tmp_path):
    """The browser decoder split at the image: the per-image products once, then per prompt (clicks, a box, many
    points) the factored decoder gives the browser decoder's outputs for prompts without a mask input."""
    result = export_browser_factored(ours, tmp_path / "products.onnx", tmp_path / "factored.onnx")
    assert max(result.max_relative_difference.values()) < TOL
    names = [t.name for t in result.products.outputs]
    assert [t.name for t in result.products.inputs] == ["image_embeddings"] and len(names) > 5
    assert [t.name for t in result.decoder.inputs] == ["point_coords", "point_labels", *names]
    assert tuple(t.name for t in result.decoder.outputs) == BROWSER_DECODER_OUTPUTS
    per_image = dict(zip(names, session(result.products.path).run(names, {"image_embeddings": embedding.numpy()})))
    per_click = session(result.decoder.path)
    for n, kind in enumerate(KINDS + ("", "")):
        feed = make_feed(ours.config, kind, PORTRAIT, seed=n, n_points=5 * n if not kind else None)
        iou, low_res = per_click.run(list(BROWSER_DECODER_OUTPUTS), {"point_coords": feed["point_coords"],
                                                                     "point_labels": feed["point_labels"],
                                                                     **per_image})
        feed["mask_input"], feed["has_mask_input"] = np.zeros_like(feed["mask_input"]), np.zeros(1, np.float32)
        _, want_iou, want_low = torch_reference(ours, embedding, feed, multimask=True)
        assert rel(low_res, want_low[:, 1:]) < TOL and rel(iou, want_iou[:, 1:]) < TOL, kind


def test_factored_browser_decoder_at_the_official_64x64_grid(tmp_path):
    config = SamConfig(encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=2, encoder_global_attn_indexes=())
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    result = export_browser_factored(build_sam(config), tmp_path / "p.onnx", tmp_path / "d.onnx", embedding=embedding)
    assert max(result.max_relative_difference.values()) < TOL
    assert {t.name: t.shape for t in result.decoder.outputs}["low_res_masks"] == (1, 3, 256, 256)


# -------------------------------------------------------------------------------------------- (d) encoder


def test_encoder_equals_torch_and_the_official_encoder(twins, tmp_path):
    ours, official = twins
    result = export_encoder(ours, tmp_path / "encoder.onnx")
    assert result.max_relative_difference < TOL
    size = ours.config.image_size
    declared = {t.name: (t.dtype, t.shape) for t in (*result.inputs, *result.outputs)}
    grid = ours.config.embedding_size
    assert declared == {"image": ("float32", (1, 3, size, size)),
                        "image_embeddings": ("float32", (1, 256, grid, grid))}
    image = ours.preprocess(torch.from_numpy(checks.sample_image(size, seed=5)).permute(2, 0, 1)[None].float())
    (got,) = session(result.path).run(None, {"image": image.numpy()})
    with torch.no_grad():
        assert rel(got, ours.image_encoder(image)) < TOL
        assert rel(got, official.image_encoder(image)) < TOL


# ---------------------------------------------------------------------------------------- every preset


def shrunk(name: str) -> SamConfig:
    """A preset with its encoder's heads and its decoder, but 2 narrow blocks (one global) at 512 px."""
    preset = SamConfig.preset(name)
    return SamConfig(**{**preset.model_dump(), "encoder_embed_dim": 4 * preset.encoder_num_heads,
                        "encoder_depth": 2, "encoder_global_attn_indexes": (1,), "image_size": 512})


SAM_PRESETS = [n for n in sorted(PRESETS) if PRESETS[n].family == "sam" and n != "tiny"]  # tiny: the command's test


@pytest.mark.parametrize("name", SAM_PRESETS)
def test_every_preset_exports(name, tmp_path):
    torch.manual_seed(0)
    model = build_sam(shrunk(name))
    result = export_onnx(model, tmp_path)
    assert {p.name for p in result.files} == {"decoder.onnx", "encoder.onnx", "export.json"}
    assert max(result.decoder.max_relative_difference.values()) < TOL
    assert result.encoder.max_relative_difference < TOL
    record = json.loads((tmp_path / "export.json").read_text())
    assert record["image_size"] == 512 and record["embedding_size"] == 32 and record["low_res_mask_size"] == 128


@pytest.mark.parametrize("name", ["mobile_sam", "sam_hq_vit_b"])
def test_other_families_are_refused_by_name(name, tmp_path):
    config = SamConfig(**{**PRESETS[name].model_dump(), "image_size": 256})
    with pytest.raises(ExportError, match=r"original SAM models .* this is a (MobileSAM|HQ-SAM) model"):
        export_onnx(build_sam(config), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_decoder_at_the_official_64x64_grid(tmp_path):
    """The decoder of vit_b/l/h at its real size (1024 px: 64 x 64 embedding, 256 x 256 low-res masks)."""
    config = SamConfig(encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=2, encoder_global_attn_indexes=())
    model = build_sam(config)
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    result = export_decoder(model, tmp_path / "decoder.onnx", embedding=embedding)
    assert max(result.max_relative_difference.values()) < TOL
    shapes = {t.name: t.shape for t in (*result.inputs, *result.outputs)}
    assert shapes["image_embeddings"] == (1, 256, 64, 64) and shapes["low_res_masks"] == (1, 1, 256, 256)


def test_what_cannot_be_exported_is_a_clear_error(ours, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="opset 9 is not supported"):
        export_decoder(ours, tmp_path / "d.onnx", opset=9)
    with pytest.raises(ExportError, match=r'pip install "samflow\[onnx\]"'):
        monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
        export_onnx(ours, tmp_path / "out")
    monkeypatch.undo()
    with pytest.raises(InputError, match="samflow Sam model"):
        export_decoder(torch.nn.Linear(2, 2), tmp_path / "d.onnx")
    folder_is_a_file = tmp_path / "file"
    folder_is_a_file.write_text("")
    with pytest.raises(ExportError, match="not a folder"):
        export_onnx(ours, folder_is_a_file, verify=False)


def test_a_half_precision_model_exports_in_float32_and_is_left_unchanged(ours, embedding, tmp_path):
    half = build_sam(ours.config, dtype=torch.bfloat16)
    half.load_state_dict(ours.state_dict())
    result = export_decoder(half, tmp_path / "decoder.onnx", verify=False)
    assert half.dtype == torch.bfloat16
    widened = build_sam(ours.config)  # the bf16 weights, widened to float32: what the graph must hold
    widened.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    feed = make_feed(ours.config, "click", LANDSCAPE)
    masks, iou, low = torch_reference(widened, embedding, feed, multimask=False)
    got = run(session(result.path), embedding, feed)
    assert rel(got["low_res_masks"], low) < TOL and rel(got["iou_predictions"], iou) < TOL


# ----------------------------------------------------------------------- (e) the command, (f) the int8 decoder


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> tuple[Path, str]:
    """`samflow export onnx --model tiny --out DIR --quantize`: the shipped tiny model, every file and check."""
    out = tmp_path_factory.mktemp("tiny") / "onnx"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "onnx", "--model", "tiny", "--out", str(out), "--quantize"])
    assert code == 0
    return out, printed.getvalue()


def test_the_command_writes_the_files(tiny_export):
    out, printed = tiny_export
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "decoder_int8.onnx", "encoder.onnx",
                                                     "export.json"]
    record = json.loads((out / "export.json").read_text())
    config = SamConfig.preset("tiny")
    assert record["model"] == "tiny" and record["image_size"] == 256 == config.image_size
    assert record["embedding_size"] == 32 and record["low_res_mask_size"] == 128  # 8 px patches
    assert record["decoder"]["multimask"] is False and record["decoder"]["opset"] == 17
    assert max(record["decoder"]["max_relative_difference_vs_torch"].values()) < TOL
    assert record["encoder"]["max_relative_difference_vs_torch"] < TOL
    shapes = {t["name"]: t["shape"] for t in record["decoder"]["inputs"]}
    assert shapes["image_embeddings"] == [1, 256, 32, 32] and shapes["mask_input"] == [1, 1, 128, 128]
    assert "decoder.onnx" in printed and "int8 vs fp32" in printed and "encoder.onnx" in printed


def test_the_command_refuses_a_bad_model_name(tmp_path, capsys):
    assert main(["export", "onnx", "--model", "vit_z", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "unknown SAM preset 'vit_z'" in err and "tiny" in err
    assert not (tmp_path / "out").exists()
    assert main(["export", "onnx", "--model", "tiny", "--out", str(tmp_path / "out"), "--opset", "99"]) != 0
    assert "opset 99" in capsys.readouterr().err


def test_int8_decoder_agreement_is_reported_and_high(tiny_export):
    out, printed = tiny_export
    agreement = json.loads((out / "export.json").read_text())["decoder_int8"]["agreement_with_fp32"]
    assert agreement["prompts"] >= 10
    assert agreement["pixel_agreement"] > 0.98 and agreement["mean_iou"] > 0.95 and agreement["min_iou"] > 0.85
    assert agreement["max_iou_prediction_difference"] < 0.05
    assert f"{agreement['pixel_agreement']:.2%} of mask pixels agree" in printed
    # and the int8 graph keeps the official interface
    int8 = onnxruntime.InferenceSession(str(out / "decoder_int8.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in int8.get_inputs()] == list(DECODER_INPUTS)
    assert [o.name for o in int8.get_outputs()] == list(DECODER_OUTPUTS)
