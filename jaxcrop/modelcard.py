"""What a model release says of its model: the model card (markdown) and the STAC
MLM (Machine Learning Model extension v1.4) Item, from the training workdir's
config, dataset meta, test metrics (W/eval/metrics.json) and calibration.

The card: the data (dataset, version, nomenclature, months and years, regions of
the test split), the test split's scores per tier, the calibration, intended use
and limits; "synthetic" up front when the model was trained on the demo dataset.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from jaxcrop.tables import markdown_table

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
TASKS = ["semantic-segmentation", "classification"]


def synthetic(trained) -> bool:
  return trained.meta.builder_config == "demo" or trained.config.data.get(
      "builder_config") == "demo"


def years(months) -> list[int]:
  return sorted({int(m[:4]) for m in months})


def parameters(variables) -> int:
  import jax
  return int(sum(np.size(a) for a in jax.tree.leaves(variables.get("params", {}))))


def architecture(config) -> str:
  m = config.model
  head = (m.get("head") or {}).get("kind", "flat")
  return (f"hybrid temporal {m.get('encoder', 'cnn')} encoder + U-Net "
          f"{tuple(m.unet.widths)}, {head} head")


def _scores(metrics: dict) -> str:
  """The test split's model scores per tier (pixel and parcel macro-F1, OA)."""
  tiers = metrics.get("tiers") or {"tier3": metrics}
  rows = []
  for tier, by in sorted(tiers.items()):
    n = len(by.get("class_names", metrics.get("pixel", {}).get("model", {}).get(
        "per_class", [])))
    rows.append([tier[-1], str(n)] + [f"{by[level]['model'][m]:.4f}"
                                      for level in ("pixel", "parcel")
                                      for m in ("macro_f1", "overall_accuracy")])
  return markdown_table(["tier", "classes", "pixel macro-F1", "pixel OA", "parcel macro-F1",
                         "parcel OA"], rows)


def card(trained, metrics: dict | None, calibration: dict | None, name: str) -> str:
  """MODEL_CARD.md of the release `name` (see the module doc)."""
  meta, cfg = trained.meta, trained.config
  lines = [f"# Model card: {name}", ""]
  if synthetic(trained):
    lines += ["> **Synthetic.** Trained and tested on jaxcrop's synthetic demo region: its "
              "scores show that the pipeline works and say nothing about real crops.", ""]
  lines += ["## Model", "",
            f"- Architecture: {architecture(cfg)}; {parameters(trained.variables):,} "
            f"parameters; JAX/Flax.",
            f"- Checkpoint: step {trained.step}.",
            f"- Input: Sentinel-2 L2A monthly composites, {len(meta.months)} months x "
            f"{len(meta.bands)} bands ({', '.join(meta.bands)}), 10 m, normalized with the "
            f"training split's per-band mean and std (mlm.json).",
            f"- Output: per pixel, {meta.num_classes} tier-3 classes of nomenclature "
            f"{meta.nomenclature_version} (tiers 2 and 1 are their groups and families).", "",
            "## Data", "",
            f"- Dataset: {meta.builder_config or cfg.data.get('builder_config')} version "
            f"{meta.version}; splits: training `{meta.train_split or cfg.data.train_split}`, "
            f"validation `{cfg.data.val_split}`, test `{cfg.data.test_split}`.",
            f"- Months: {meta.months[0]} to {meta.months[-1]} (years "
            f"{', '.join(map(str, years(meta.months)))}).",
            f"- Labels: the Land Parcel Register (RPG) classes mapped to nomenclature "
            f"{meta.nomenclature_version}; whole zones per split (no spatial leakage)."]
  if metrics:
    lines += [f"- Regions of the test split: {', '.join(metrics.get('per_region', {})) or '?'}.",
              "", f"## Test scores ({metrics['split']} split, {metrics['checkpoint']} "
              f"checkpoint, step {metrics['step']})", "", _scores(metrics)]
  else:
    lines += ["", "## Test scores", "", "Not evaluated: run `python -m jaxcrop.evaluate "
              "--workdir W` before exporting."]
  lines += ["", "## Calibration", ""]
  if calibration:
    lines += [f"Temperature {calibration['temperature']:.4f}, fitted on "
              f"{calibration['pixels']:,} pixels of the {calibration['split']} split "
              f"(ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}); "
              f"predict applies it to the confidences and probabilities."]
    section = (metrics or {}).get("calibration")
    if section:
      lines += ["", markdown_table(["tier", "ECE before", "ECE after"], [
          [t[-1], f"{by['ece_before']:.4f}", f"{by['ece_after']:.4f}"]
          for t, by in section["tiers"].items()]), "",
          f"(test split, {section['bins']} bins.)"]
  else:
    lines += ["No temperature fitted: the confidences are the raw softmax (run "
              "`python -m jaxcrop.calibrate --workdir W`)."]
  lines += ["", "## Intended use and limits", "",
            "- Crop-type maps of French agricultural land for the season and nomenclature "
            "above, at 10 m, with `python -m jaxcrop.predict --workdir <this folder>`.",
            "- Not for other years, sensors, processing baselines or regions without "
            "checking the scores there: crop calendars and practices shift.",
            "- Trust per pixel: confidence.tif (calibrated) and validity.tif (clear "
            "acquisitions, gap-filled months) beside every map; small parcels and field "
            "edges are less reliable than parcel cores.",
            "- The labels are farmers' declarations (RPG): they carry their errors."]
  return "\n".join(lines) + "\n"


def mlm_item(trained, calibration: dict | None, name: str) -> dict:
  """The STAC MLM Item of the release (the checkpoint folder as its weights asset)."""
  import jax
  meta = trained.meta
  T, C = len(meta.months), len(meta.bands)
  classes = [{"value": k, "name": n, "color_hint": c.lstrip("#").upper()}
             for k, (n, c) in enumerate(zip(meta.class_names, meta.colors))]
  now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
  return {
      "type": "Feature", "stac_version": "1.1.0", "id": name,
      "stac_extensions": [MLM_SCHEMA,
                          "https://stac-extensions.github.io/classification/v2.0.0/schema.json"],
      "geometry": None,
      "properties": {
          "datetime": now, "description": f"jaxcrop crop-type model {name}",
          "mlm:name": name, "mlm:architecture": architecture(trained.config),
          "mlm:tasks": TASKS, "mlm:framework": "JAX/Flax",
          "mlm:framework_version": jax.__version__,
          "mlm:total_parameters": parameters(trained.variables), "mlm:pretrained": False,
          "mlm:batch_size_suggestion": 1, "mlm:accelerator": "amd64",
          "mlm:accelerator_constrained": False,
          "mlm:input": [{
              "name": "monthly composites", "bands": list(meta.bands),
              "input": {"shape": [-1, T, -1, -1, C],
                        "dim_order": ["batch", "time", "height", "width", "bands"],
                        "data_type": "float32"},
              "value_scaling": [{"type": "z-score", "mean": float(m), "stddev": float(s)}
                                for m, s in zip(np.ravel(meta.mean), np.ravel(meta.std))],
              "description": f"Sentinel-2 L2A monthly composites {meta.months[0]} to "
                             f"{meta.months[-1]}, 10 m; 0 = no observation"}],
          "mlm:output": [{
              "name": "class scores", "tasks": ["semantic-segmentation"],
              "result": {"shape": [-1, -1, -1, meta.num_classes],
                         "dim_order": ["batch", "height", "width", "class"],
                         "data_type": "float32"},
              "classification:classes": classes,
              "post_processing_function": {
                  "format": "documentation-link", "expression":
                      f"softmax(logits / {calibration['temperature'] if calibration else 1.0})"
                      f"; argmax = class"}}],
          "jaxcrop:nomenclature": meta.nomenclature_version,
          "jaxcrop:dataset": meta.builder_config, "jaxcrop:dataset_version": meta.version,
          "jaxcrop:checkpoint_step": trained.step,
          "jaxcrop:temperature": calibration["temperature"] if calibration else None},
      "links": [],
      "assets": {
          "weights": {"href": "./checkpoints", "title": "Orbax checkpoint (model arrays)",
                      "roles": ["mlm:model", "mlm:weights", "data"],
                      "mlm:artifact_type": "orbax.checkpoint"},
          "model_card": {"href": "./MODEL_CARD.md", "type": "text/markdown",
                         "roles": ["metadata"]},
          "dataset_meta": {"href": "./dataset_meta.json", "type": "application/json",
                           "roles": ["metadata"]},
          "config": {"href": "./config.json", "type": "application/json",
                     "roles": ["metadata"]}}}
