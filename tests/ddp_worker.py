"""One rank of a library-level run under torchrun, for tests/test_distributed.py.

    torchrun --nproc_per_node=N tests/ddp_worker.py MODE OUT_DIR

MODE "prune": train, prune and compress the digits MLP; every rank saves the tensors it
ends with to OUT_DIR/rank{R}.pt (what the test compares) and passes compress_model an
output file and a run folder of its own name, so a rank other than 0 that wrote anything
would leave a file behind. MODE "mismatch": rank 1 holds one weight that differs;
check_identical must stop both ranks, which write the error to OUT_DIR/error{R}.txt.
MODE "fit": a net without dropout trained on the split batches, saved to OUT_DIR/fit{R}.pt;
"fit_rows" the same with its Linear layers stepped by rows and a last batch smaller than the ranks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nncompress import distributed
from nncompress.config import PruneConfig, ShareConfig, TrainConfig
from nncompress.data import load_data
from nncompress.errors import RankMismatchError
from nncompress.models import build_model
from nncompress.pipeline import compress_model, prune_model, train_model
from nncompress.rundir import RunDir
from nncompress.train import set_seed

TRAIN = TrainConfig(epochs=4, lr=0.05, batch_size=64)
PRUNE = PruneConfig(epochs_per_step=1, final_epochs=1, q_max=1.0, batch_size=64, tolerance=2.0, probe=False)
SHARE = ShareConfig(epochs=1, batch_size=64)


def run_prune(out: Path, rank: int) -> None:
    splits = load_data("digits")
    set_seed(0)
    model = build_model("mlp", splits.input_shape, splits.num_classes)
    trained = train_model(model, splits, TRAIN)
    saved = {f"trained.{k}": v.clone() for k, v in model.state_dict().items()}
    result = prune_model(model, splits, PRUNE)
    saved.update({f"pruned.{k}": v.clone() for k, v in model.state_dict().items()})
    saved.update({f"mask.{k}": v.clone() for k, v in result.masks.items()})
    summary = compress_model(model, {}, splits, out / f"model{rank}.nnc", None, SHARE, run=RunDir(out / f"run{rank}"))
    saved.update({f"shared.{k}": v.clone() for k, v in model.state_dict().items()})
    saved["val_trained"] = torch.tensor(trained["val"]["accuracy"], dtype=torch.float64)
    saved["val_pruned"] = torch.tensor(result.val_accuracy, dtype=torch.float64)
    saved["test_score"] = torch.tensor(summary["test_score"], dtype=torch.float64)
    saved["file_bytes"] = torch.tensor(summary["file_bytes"])
    torch.save(saved, out / f"rank{rank}.pt")


def run_mismatch(out: Path, rank: int) -> None:
    splits = load_data("digits")
    set_seed(0)
    model = build_model("mlp", splits.input_shape, splits.num_classes)
    if rank == 1:
        with torch.no_grad():
            next(model.parameters())[0, 0] += 1e-6
    try:
        distributed.check_identical(distributed.model_tensors(model), "the test weights")
    except RankMismatchError as exc:
        (out / f"error{rank}.txt").write_text(str(exc))


def run_fit(out: Path, rank: int) -> None:
    """A net without dropout or BatchNorm: the split batch must follow the single-process trajectory."""
    from torch import nn
    from nncompress.train import fit

    splits = load_data("digits")
    gen = set_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    losses = fit(model, splits.train_x, splits.train_y, TrainConfig(epochs=3, lr=0.05, batch_size=50), generator=gen)
    torch.save({**model.state_dict(), "losses": torch.tensor(losses, dtype=torch.float64)}, out / f"fit{rank}.pt")


def run_fit_rows(out: Path, rank: int) -> None:
    """As ``fit``, every Linear stepped by rows inside backward (each block averaged over the ranks),
    on 101 examples in batches of 50: the last batch has one example, so one rank has none and that
    step is taken after backward."""
    from torch import nn
    from nncompress.train import fit, rowstep

    rowstep.ROW_STEP_BYTES, rowstep.BLOCK_BYTES = 1, 7 * 64 * 4
    splits = load_data("digits")
    gen = set_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    losses = fit(
        model, splits.train_x[:101], splits.train_y[:101], TrainConfig(epochs=3, lr=0.05, batch_size=50), generator=gen
    )
    torch.save({**model.state_dict(), "losses": torch.tensor(losses, dtype=torch.float64)}, out / f"fit{rank}.pt")


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    import os

    started = distributed.init_from_env()
    {"prune": run_prune, "mismatch": run_mismatch, "fit": run_fit, "fit_rows": run_fit_rows}[mode](
        out, distributed.rank()
    )
    if started:  # as the command line leaves: together, without tearing gloo down
        distributed.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
