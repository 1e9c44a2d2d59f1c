"""Evaluation tasks, the SAM paper's zero-shot experiments (`samflow eval DATASET --task ...`):

- `points`: the single-point protocol with correction clicks and box prompts (mIoU); `auto`: automatic-mask recall;
- `instances`: boxes as prompts, mask AP; `proposals`: automatic masks as proposals, mask AR; `scoring`: both through
  pycocotools' COCOeval and the lvis package's LVISEval;
- `edges`: SAM's edge maps; `boundaries`: the BSDS500 boundary benchmark (ODS, OIS, AP, R50);
- `text`: text-to-mask mIoU;
- `datasets` (dataset specs), `ground_truth` (COCO / LVIS ground truth of any dataset), `outputs`, `plots`.
"""
