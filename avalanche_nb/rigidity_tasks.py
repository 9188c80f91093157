"""Rigidity reduction on math tasks, training-free and after a short fine-tune (phase 09, seed 002).

* :func:`task_table`: per document of each task (:mod:`oe_tasks`: gold bits per byte or multiple choice),
  its score with no edit and with :func:`interventions.rigidity_reduction` at the ME layer and at
  control layers (× alpha × mask rate), all edits at the MA token;
* :func:`finetune_table`: LoRA fine-tunes (:mod:`finetune`) on held-out documents of the bits-per-byte
  tasks, without the edit, with it at the ME layer and with it at one control layer, each scored on the
  same documents with its own edit in place; and their training losses;
* :func:`task_tests`: each edited configuration against no edit (of the same setting), and the ME layer
  against each control layer, paired over documents.
"""

from __future__ import annotations

from contextlib import nullcontext
from itertools import product
from typing import Any, Mapping, Sequence

import pandas as pd

from . import finetune, hooks, oe_tasks
from . import interventions as iv
from .generation import paired_difference
from .ma_experiments import control_layers
from .models import input_device
from .stats import mcnemar

#: the columns that identify one scored configuration
CONFIG = ["setting", "applied", "at_me_layer", "alpha", "mask_rate"]


def load_tasks(names: Sequence[str], limit: int | None, seed: int) -> dict[str, tuple[oe_tasks.Task, oe_tasks.Task]]:
    """Per task name, (the ``limit`` scored documents, the held-out rest); stops on an unknown task."""
    return {n: oe_tasks.split(oe_tasks.load_task(n), limit, seed) for n in names}


def _edit(model, layer: int, ma_pos: int, alpha: float, rate: float):
    return iv.rigidity_reduction(model, layer, [ma_pos], alpha, rate) if layer >= 0 else nullcontext()


def _score_all(model, tokenizer, tasks: Mapping[str, oe_tasks.Task], prompts: Mapping[str, list], keys: dict,
               ma_pos: int, score_batch_size: int) -> list[dict]:
    rows = []
    for name, task in tasks.items():
        s = oe_tasks.score(model, tokenizer, task, score_batch_size=score_batch_size, task_prompts=prompts[name],
                           min_prefix=ma_pos + 1)  # the edit acts at the MA token: it must be in a fresh pass
        rows += [{**keys, "task": name, "metric": task.primary, "doc_id": int(r.doc_id), "value": float(r.value)}
                 for r in s.itertuples()]
    return rows


def _prompts(tokenizer, tasks: Mapping[str, oe_tasks.Task], ma_pos: int) -> dict[str, list]:
    """Each task's prompts; every context must reach the MA token, where the edit acts."""
    prompts = {n: oe_tasks.prompts(tokenizer, t) for n, t in tasks.items()}
    for n, ps in prompts.items():
        short = min(len(p.context) for p in ps)
        if ma_pos >= short:
            raise ValueError(f"task {n!r}: the MA token (position {ma_pos}) lies past a context of {short} tokens")
    return prompts


def task_table(lm, p: Mapping[str, Any], me: Mapping[str, Any], tasks: Mapping[str, oe_tasks.Task]) -> pd.DataFrame:
    """Training-free: one row per (configuration, task, document) with the document's ``value`` (the task's
    primary metric: ``bpb`` or a 0/1 correctness). Configurations: no edit (``applied = -1``), then the ME
    layer and ``math_controls`` control layers × ``rigidity_alphas`` × ``rigidity_mask_rates``."""
    model, tok = lm.model, lm.tokenizer
    iv.check_rigidity_grid(p["rigidity_alphas"], p["rigidity_mask_rates"], model.config.hidden_size)
    prompts = _prompts(tok, tasks, me["ma_pos"])
    layers = control_layers(len(hooks.decoder_layers(model)), me["me_layer"], p["math_controls"])
    configs = [(-1, 1.0, 0.0)] + list(product(layers, p["rigidity_alphas"], p["rigidity_mask_rates"]))
    from .progress import track

    rows = []
    for applied, alpha, rate in track(configs, "rigidity reduction on math tasks", unit="configuration") \
            if p["progress"] else configs:
        keys = {"setting": "pretrained", "applied": applied, "at_me_layer": applied == me["me_layer"],
                "alpha": alpha, "mask_rate": rate}
        with _edit(model, applied, me["ma_pos"], alpha, rate):
            rows += _score_all(model, tok, tasks, prompts, keys, me["ma_pos"], p["score_batch_size"])
    return pd.DataFrame(rows)


def finetune_layers(n_layers: int, me_layer: int, math_controls: int | None) -> list[int]:
    """The fine-tunes' edit layers: none (-1), the ME layer, and the middle one of the control layers."""
    controls = control_layers(n_layers, me_layer, math_controls)[1:] or control_layers(n_layers, me_layer, 1)[1:]
    return [-1, me_layer, controls[len(controls) // 2]]


def finetune_texts(held_out: Mapping[str, oe_tasks.Task]) -> list[str]:
    """The fine-tuning text: context + gold continuation of every held-out document of the bpb tasks."""
    return [d.context + d.continuations[d.gold] for t in held_out.values() if t.metric == "bpb" for d in t.docs]


def finetune_table(lm, p: Mapping[str, Any], me: Mapping[str, Any], tasks: Mapping[str, oe_tasks.Task],
                   held_out: Mapping[str, oe_tasks.Task]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """After fine-tuning: (rows as :func:`task_table`'s with ``setting = "finetuned"``, one per fine-tune of
    :func:`finetune_layers` trained and scored with the edit at ``applied``, alpha and mask rate the first
    of their lists; the training loss per (applied, step)). The memory check runs before any fine-tune."""
    model, tok = lm.model, lm.tokenizer
    sizes = dict(batch_size=p["finetune_batch_size"], window=p["finetune_window"], rank=p["finetune_lora_rank"])
    finetune.check_memory(model, str(input_device(model)), **sizes)  # `device` is ignored under a device map
    texts = finetune_texts(held_out)
    if not texts:
        raise ValueError("fine-tuning needs a bits-per-byte task in `math_tasks` (its held-out documents are the text)")
    windows = finetune.text_windows(tok, texts, p["finetune_steps"] * p["finetune_batch_size"], p["finetune_window"],
                                    seed=p["seed"])
    prompts = _prompts(tok, tasks, me["ma_pos"])
    alpha, rate = p["rigidity_alphas"][0], p["rigidity_mask_rates"][0]
    rows, losses = [], []
    for layer in finetune_layers(len(hooks.decoder_layers(model)), me["me_layer"], p["math_controls"]):
        edit = (lambda m, l=layer: _edit(m, l, me["ma_pos"], alpha, rate)) if layer >= 0 else None
        tuned, loss = finetune.lora_finetune(model, windows, steps=p["finetune_steps"], batch_size=p["finetune_batch_size"],
                                             lr=p["finetune_lr"], rank=p["finetune_lora_rank"], seed=p["seed"],
                                             progress=p["progress"], edit=edit)
        keys = {"setting": "finetuned", "applied": layer, "at_me_layer": layer == me["me_layer"],
                "alpha": alpha if layer >= 0 else 1.0, "mask_rate": rate if layer >= 0 else 0.0}
        with _edit(tuned, layer, me["ma_pos"], alpha, rate):
            rows += _score_all(tuned, tok, tasks, prompts, keys, me["ma_pos"], p["score_batch_size"])
        losses += [{"applied": layer, "step": s + 1, "loss": float(v)} for s, v in enumerate(loss)]
        del tuned
    return pd.DataFrame(rows), pd.DataFrame(losses)


def _pair(a: pd.DataFrame, b: pd.DataFrame, binary: bool, p: Mapping[str, Any]) -> dict[str, float]:
    """``a - b`` paired by document: mean, bootstrap 95% CI, and McNemar's exact p (0/1 outcomes) or
    Wilcoxon's (continuous)."""
    b = b.set_index("doc_id").value
    a = a.set_index("doc_id").value.loc[b.index]
    r = paired_difference(a.to_numpy(), b.to_numpy(), bootstrap_draws=p["bootstrap_draws"], seed=p["seed"])
    if binary:
        r["p"] = mcnemar(a.to_numpy() > 0.5, b.to_numpy() > 0.5)["p_exact"]
    return {"a_mean": float(a.mean()), "b_mean": float(b.mean()), **r}


def task_tests(table: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    """Paired tests per (setting, task): every edited configuration against no edit (``against = -1``), and
    the ME layer against each control layer at the same alpha and mask rate (``against`` = that layer).
    ``diff`` = edited minus ``against``; ``better``: the CI excludes 0 on the side the metric prefers
    (lower bits per byte, higher accuracy) and p < 0.05; ``worse``: the same on the other side."""
    out = []
    for (setting, task), sel in table.groupby(["setting", "task"], sort=False):
        metric = sel.metric.iloc[0]
        higher = metric != "bpb"
        base = sel[sel.applied == -1]
        edited = sel[sel.applied >= 0]
        for (applied, alpha, rate), ed in edited.groupby(["applied", "alpha", "mask_rate"], sort=False):
            me_row = bool(ed.at_me_layer.iloc[0])
            against = [(-1, base)]
            if me_row:
                against += [(int(l), c) for l, c in edited[(edited.alpha == alpha) & (edited.mask_rate == rate)
                                                           & ~edited.at_me_layer].groupby("applied")]
            for layer, other in against:
                r = _pair(ed, other, higher, p)
                out.append({"setting": setting, "task": task, "metric": metric, "applied": int(applied),
                            "at_me_layer": me_row, "alpha": alpha, "mask_rate": rate, "against": layer, **r,
                            "better": bool((r["lo"] > 0 if higher else r["hi"] < 0) and r["p"] < 0.05),
                            "worse": bool((r["hi"] < 0 if higher else r["lo"] > 0) and r["p"] < 0.05)})
    return pd.DataFrame(out)
