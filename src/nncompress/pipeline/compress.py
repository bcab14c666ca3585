"""prune -> share -> fine-tune -> code into a ``.nnc`` file, scored on the model decoded from that file."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from torch import nn

from nncompress import distributed
from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig
from nncompress.data import Splits, load_data
from nncompress.data.datasets import transform_record
from nncompress.models import arch_record
from nncompress.models.batchnorm import batchnorm_as_affine_
from nncompress.modelfile import layer_table as file_table, load_compressed, save_compressed
from nncompress.progress import ProgressFn
from nncompress.pruning.apply import count_parameters
from nncompress.layers import compressible_layers
from nncompress.rundir import RunDir
from nncompress.train.objective import ObjectiveSpec
from nncompress.pipeline.measure import _objective, _weights, metrics
from nncompress.pipeline.modelfiles import load_for_data
from nncompress.pipeline.prune import prune_model
from nncompress.pipeline.sensitivity import scan_sensitivity
from nncompress.pipeline.share import _sharing_budget, quantized_layers, share_model


def run_compress(
    checkpoint: str | Path,
    data: str,
    out: str | Path,
    prune_cfg: Optional[PruneConfig],
    share_cfg: ShareConfig,
    *,
    model_name: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    splits: Optional[Splits] = None,
    sensitivity_cfg: Optional[SensitivityConfig] = None,
    run: Optional[RunDir] = None,
    objective: ObjectiveSpec = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """prune (unless ``prune_cfg`` is None or the checkpoint is already pruned)
    -> share -> fine-tune -> code; the reported accuracy is that of the model
    decoded from the written file. With ``run`` every stage leaves its files
    (and its training state, for resuming) in that run directory."""
    splits = splits or load_data(data)
    model, source_meta = load_for_data(checkpoint, splits, model_name, model_kwargs)
    return compress_model(
        model,
        source_meta,
        splits,
        out,
        prune_cfg,
        share_cfg,
        progress=progress,
        sensitivity_cfg=sensitivity_cfg,
        run=run,
        objective=objective,
    )


def _histograms(model: nn.Module, nonzero_only: bool) -> dict[str, Any]:
    from nncompress.report.histograms import histogram_record

    return histogram_record(_weights(model), nonzero_only=nonzero_only)


def compress_model(
    model: nn.Module,
    source_meta: dict[str, Any],
    splits: Splits,
    out: str | Path,
    prune_cfg: Optional[PruneConfig],
    share_cfg: ShareConfig,
    *,
    progress: Optional[ProgressFn] = None,
    sensitivity_cfg: Optional[SensitivityConfig] = None,
    run: Optional[RunDir] = None,
    objective: ObjectiveSpec = None,
) -> dict[str, Any]:
    """The stages of ``run_compress`` on a model already in memory (changed in place).
    ``objective`` (default: accuracy with labels, distillation from the model as
    given without) judges every stage against the model as given."""
    skipped = prune_cfg is not None and bool(source_meta.get("pruned"))
    if skipped:
        prune_cfg = None
    journal = run.journal if run else None
    histograms: dict[str, Any] = {}
    dense_params = int(source_meta.get("dense_params") or count_parameters(model)[0])
    # layer sizes before any neuron was removed, so the file's table counts removed neurons as pruned;
    # unknown for a checkpoint pruned elsewhere (or by an older nncompress) that did not record them
    dense_weights = source_meta.get("dense_weights") or (
        None if source_meta.get("pruned") else {n: m.weight.numel() for n, m in compressible_layers(model).items()}
    )
    objective = _objective(objective, model, splits)
    dense_test = metrics(model, splits, "test", objective)
    if run:
        histograms["pruned" if source_meta.get("pruned") else "dense"] = _histograms(
            model, nonzero_only=bool(source_meta.get("pruned"))
        )
    if sensitivity_cfg is not None and prune_cfg is not None:
        scan = scan_sensitivity(
            model, splits, sensitivity_cfg, run.path if run else None, progress, objective=objective
        )
        if not prune_cfg.layer_scale:  # per-layer q given by hand wins over the scan's
            prune_cfg = dataclasses.replace(prune_cfg, layer_scale=scan["layer_scale"])
    t0 = time.perf_counter()
    pruned = None
    if prune_cfg is not None:
        pruned = prune_model(
            model,
            splits,
            prune_cfg,
            progress=progress,
            on_step=(lambda rec: run.on_step(rec.to_dict())) if run else None,
            journal=journal,
            objective=objective,
        )
        histograms["pruned"] = _histograms(model, nonzero_only=True)
    t1 = time.perf_counter()
    budget = _sharing_budget(pruned, prune_cfg, source_meta)
    shared, share_info = share_model(
        model,
        splits,
        share_cfg,
        progress,
        journal=journal,
        objective=objective,
        budget=None if budget is None else budget["sharing"],
    )
    if budget is not None:
        share_info["budget"] = budget
    t2 = time.perf_counter()
    meta: dict[str, Any] = {"data": splits.name, "dense_params": dense_params}
    if dense_weights:
        meta["dense_weights"] = dense_weights
    if transform_record(splits.transform):
        meta["transform"] = transform_record(splits.transform)
    if splits.split:
        meta["split"] = dict(splits.split)  # the held-out validation the model was tuned against
    quantized = {f"{n}.weight": share_cfg.quantize_dtype for n in quantized_layers(model, share_cfg)}

    def finish() -> dict[str, Any]:  # rank 0: write the file, decode it and score what was decoded
        if share_cfg.batchnorm == "affine":
            meta["batchnorm_affine"] = batchnorm_as_affine_(model)
        save_compressed(
            out,
            model,
            shared,
            meta=meta,
            rel_bits=share_cfg.rel_bits,
            raw_dtype=share_cfg.raw_dtype,
            codebook_dtype=share_cfg.codebook_dtype,
            quantized=quantized,
            progress=progress,
        )
        shared.clear()  # masks and indices are in the file now; decoding it needs their memory
        t3 = time.perf_counter()
        decoded = load_compressed(out, max_decoded_bytes=2**62, max_tensor_bytes=2**62)  # written here: no limit
        # the file records the factory this very model was built from: calling it again needs no more trust
        restored = decoded.build_model(
            None if decoded.header.get("arch") else model,
            trust_factory=(arch_record(model) or {}).get("factory", False),
        )
        test = metrics(restored, splits, "test", objective)
        table = file_table(decoded.header, decoded.section_bytes, decoded.file_bytes)
        scores = (
            {"dense_test_accuracy": dense_test["score"], "test_accuracy": test["score"]}
            if objective.kind == "classification"
            else {}
        )
        summary = {
            "file": str(out),
            **table,
            **scores,
            "metric": objective.metric,
            "transform": splits.transform,
            "dense_test_score": dense_test["score"],
            "test_score": test["score"],
            "test_drop_points": round(
                (objective.signed(dense_test["score"]) - objective.signed(test["score"])) * 100, 4
            ),
            "objective": pruned.objective if pruned else {**objective.describe()},
            "warnings": pruned.warnings if pruned else [],
            "val_accuracy_pruned": pruned.val_accuracy if pruned else None,
            "pruning_skipped": skipped,
            "finetune": pruned.finetune if pruned else None,
            **share_info,
            "config": {"prune": prune_cfg.to_dict() if prune_cfg else None, "share": share_cfg.to_dict()},
            "seconds": {
                "prune": round(t1 - t0, 2),
                "share": round(t2 - t1, 2),
                "encode": round(t3 - t2, 2),
                "decode_and_test": round(time.perf_counter() - t3, 2),
            },
        }
        if run:
            histograms["shared"] = _histograms(restored, nonzero_only=True)
            run.write_json("histograms.json", {"stages": histograms})
            summary["training_calls"] = run.journal.calls
            summary["resumed_training_calls"] = run.journal.resumed_calls
            run.write_json("summary.json", summary)
            run.journal.clear()
        return summary

    return distributed.on_main(finish)
