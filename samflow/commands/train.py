"""`samflow train CONFIG.yaml`: train or fine-tune SAM with the interactive recipe; resumes by default."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from samflow.train import load_train_config, train

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune SAM (points, boxes, correction clicks) from a YAML config",
        description="Train SAM as CONFIG.yaml says (see samflow.train.TrainConfig and recipes/tiny.yaml). "
        "Checkpoints go to out_dir (last.safetensors + last_state.pt); a rerun resumes from them.",
    )
    p.add_argument("config", help="training config (YAML)")
    p.add_argument("--out-dir", help="override out_dir")
    p.add_argument("--steps", type=int, help="override the total number of steps")
    p.add_argument("--init-checkpoint", help="override init_checkpoint (start from these weights)")
    p.add_argument("--freeze-image-encoder", action="store_true", default=None,
                   help="train the prompt encoder and mask decoder only")
    p.add_argument("--export", help="override export (where the final weights are also written)")
    p.add_argument("--device", help="override device (cpu, cuda, cuda:1 ...)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in this call (resume later)")
    p.add_argument("--no-resume", action="store_true", help="start over even if out_dir has a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM behaves as Ctrl-C: the loop saves a checkpoint before exiting.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from samflow.train.text_recipes import run_text_recipe

    if run_text_recipe(args.config) is not None:  # a text_clip: or text_adapter: recipe (issue 6)
        return 0
    config = load_train_config(
        args.config,
        out_dir=args.out_dir,
        steps=args.steps,
        init_checkpoint=args.init_checkpoint,
        freeze_image_encoder=args.freeze_image_encoder,
        export=args.export,
        device=args.device,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    result = train(config, resume=not args.no_resume, progress=not args.no_progress and sys.stderr.isatty(),
                   max_steps=args.max_steps)
    state = "finished" if result.finished else "stopped (rerun the same command to resume)"
    print(f"{state} at step {result.step}/{config.steps} in {result.seconds / 60:.1f} min; weights: {result.checkpoint}")
    if result.finished and config.export:
        print(f"exported: {config.export}")
    return 0
