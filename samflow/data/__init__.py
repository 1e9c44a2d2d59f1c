"""Datasets: the synthetic shape scenes, and readers of SA-1B and COCO instance segmentation."""

from samflow.data.coco import CocoDataset, rasterize_polygons, segmentation_to_mask
from samflow.data.sa1b import SA1BDataset
from samflow.data.samples import Sample
from samflow.data.synthetic import COLORS, SHAPES, Scene, WriteStats, render_scene, scene_rng, write_dataset

__all__ = [
    "COLORS",
    "SHAPES",
    "CocoDataset",
    "SA1BDataset",
    "Sample",
    "Scene",
    "WriteStats",
    "rasterize_polygons",
    "render_scene",
    "scene_rng",
    "segmentation_to_mask",
    "write_dataset",
]
