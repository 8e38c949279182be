"""Train one Gemma 2 from the command line: one process, or data-parallel under torchrun.

    python -m alignlab.gemma2.cli --out runs/ntp --model small --set steps=500
    python -m torch.distributed.run --nproc_per_node 2 -m alignlab.gemma2.cli --out runs/ddp ...

Under torchrun the ranks train one model data-parallel (gloo on CPU, nccl on CUDA); see
`alignlab.gemma2.train`. Rank 0 writes DIR/{config.json, metrics.jsonl, log.txt, checkpoint/,
results.json} through a standalone run context (`RunContext.standalone`); the other ranks
only read DIR/checkpoint when resuming.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from alignlab.core import config as cfglib
from alignlab.core.checkpoint import Checkpointer
from alignlab.core.context import RunContext
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json
from alignlab.gemma2.data import synthetic_tokens
from alignlab.gemma2.train import TrainConfig, train

NAME = "gemma2.train"  # the name of these runs in their logs


def _load_tokens(source: str, vocab_size: int, n: int, seed: int) -> np.ndarray:
    if source == "synthetic":
        return synthetic_tokens(vocab_size, n, seed=seed)
    path = Path(source)
    if path.suffix != ".npy" or not path.is_file():
        raise AlignlabError(
            f"--data {source!r}: expected 'synthetic' or an existing .npy file of token ids."
        )
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignlab.gemma2.cli", description=__doc__)
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field, e.g. --set steps=200 (repeatable)",
    )
    parser.add_argument("--model", default="tiny", help="a Gemma2Config preset (default tiny)")
    parser.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Gemma2Config field, e.g. --model-set num_layers=2",
    )
    parser.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (a repeating random sequence) or a .npy token stream",
    )
    parser.add_argument("--val-data", default=None, help="like --data (default: --data)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Returns the exit code: 0, or 2 after one `error:` line for bad input."""
    args = _parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    device = args.device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    try:
        from alignlab.gemma2.config import Gemma2Config
        from alignlab.gemma2.model import Gemma2ForCausalLM

        cfg = cfglib.apply_overrides(TrainConfig(), args.set)  # validated
        model_cfg = cfglib.apply_overrides(Gemma2Config.preset(args.model), args.model_set)
        out = Path(args.out)
        if Checkpointer(out).last_step() is not None and not args.resume:
            raise AlignlabError(f"{out} holds a checkpoint; pass --resume or choose another --out.")
        n = max(20_000, 4 * cfg.batch_size * (cfg.seq_len + 1))
        train_tokens = _load_tokens(args.data, model_cfg.vocab_size, n, cfg.seed)
        val_tokens = _load_tokens(args.val_data or args.data, model_cfg.vocab_size, n, cfg.seed)
        torch.manual_seed(cfg.seed)  # the initial weights (DDP then broadcasts rank 0's)
        model = Gemma2ForCausalLM(model_cfg)
        if rank == 0:
            ctx = RunContext.standalone(
                out, NAME, cfg, seed=cfg.seed, device=device, resume=args.resume, quiet=args.quiet
            )
            atomic_write_json(
                out / "config.json",
                {"train": cfglib.to_dict(cfg), "model": dataclasses.asdict(model_cfg),
                 "data": args.data, "val_data": args.val_data or args.data, "world_size": world},
            )  # fmt: skip
        else:  # reads the checkpoint to resume, writes nothing (train writes on rank 0 only)
            ctx = RunContext(None, cfg, "cli", cfg.seed, out, device, args.resume, True, name=NAME)
        result = train(model, cfg, train_tokens, val_tokens, ctx=ctx)
        if rank == 0:
            atomic_write_json(out / "results.json", result.to_dict())
            ctx.log(
                f"done: val loss {result.final_val_loss:.4f}, ppl {result.final_val_ppl:.2f}, "
                f"{result.tokens_per_s:,.0f} tokens/s on {world} process(es)"
            )
        if world > 1:
            # the ranks leave together: one tearing gloo down while rank 0 still writes its
            # results can abort with "terminate called without an active exception"
            torch.distributed.barrier()
    except AlignlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
