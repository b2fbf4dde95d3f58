"""The class tree: per-tier metrics by hand, hierarchical heads and their consistency,
the tier loss, the attention encoder (shapes, pixel-order equivariance, masking)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.hybrid import get_config
from jaxcrop import cv, evaluate, hierarchy, losses
from cropcontracts.errors import UserError
from jaxcrop.hierarchy import Tree
from jaxcrop.models import build_model
from jaxcrop.models.heads import consistent_scores, tier_outputs
from jaxcrop.models.temporal import AttentionEncoder

# 0 wheat, 1 maize → cereal (0); 2 rapeseed → oilseed (1); 3 vines → vines (2).
# Families: cereal, oilseed → crops (0); vines → permanent (1).
TREE = Tree.from_parents([0, 0, 1, 2], [0, 0, 0, 1])
NAMES = {1: ["crops", "permanent"], 2: ["cereal", "oilseed", "vines"],
         3: ["wheat", "maize", "rapeseed", "vines"]}


def test_tree_tables_and_mapping():
  assert TREE.sizes == (2, 3, 4) and TREE.tier1_of_tier2().tolist() == [0, 0, 1]
  label = np.array([[0, 255], [2, 3]], np.uint8)
  assert hierarchy.to_tier(label, TREE.parents(2)).tolist() == [[0, 255], [1, 2]]
  assert hierarchy.to_tier(label, TREE.parents(1)).dtype == np.uint8
  with pytest.raises(ValueError, match="two tier-1 parents"):
    Tree.from_parents([0, 0], [0, 1])
  # A parent's probability is the sum of its children's.
  p = np.array([0.1, 0.2, 0.3, 0.4])
  np.testing.assert_allclose(np.exp(hierarchy.tier_log_probs(np.log(p), TREE.parents(2), 3)),
                             [0.3, 0.3, 0.4], rtol=1e-6)


def test_tier_confusion_equals_confusion_of_mapped_labels():
  rng = np.random.default_rng(0)
  label, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
  from jaxcrop import metrics
  cm = metrics.confusion_matrix_np(label, pred, 4)
  for tier in (1, 2):
    t = TREE.parents(tier)
    np.testing.assert_array_equal(
        hierarchy.tier_confusion(cm, t, TREE.sizes[tier - 1]),
        metrics.confusion_matrix_np(t[label], t[pred], TREE.sizes[tier - 1]))


def test_per_tier_metrics_by_hand():
  pixels = {"label": np.array([0, 0, 1, 2, 3, 3], np.uint8),
            "model": np.array([1, 0, 0, 2, 3, 2], np.uint8),
            "parcel": np.array([1, 1, 2, 3, 4, 4], np.uint32),
            "zone": np.zeros(6, np.int32), "region": np.zeros(6, np.int32),
            "zones": ["z"], "regions": ["north"]}
  out = evaluate.compute(pixels, ["model"], NAMES[3], TREE, NAMES)
  t1, t2, t3 = (out["tiers"][f"tier{t}"] for t in (1, 2, 3))
  assert t3["pixel"] == out["pixel"] and t2["class_names"] == NAMES[2]
  # Tier 3: F1 wheat 1/2, maize 0, rapeseed 2/3, vines 2/3.
  assert t3["pixel"]["model"]["macro_f1"] == pytest.approx(11 / 24)
  # Tier 2: labels 0 0 0 1 2 2, predictions 0 0 0 1 2 1: F1 1, 2/3, 2/3.
  assert t2["pixel"]["model"]["macro_f1"] == pytest.approx(7 / 9)
  assert t2["pixel"]["model"]["overall_accuracy"] == pytest.approx(5 / 6)
  # Tier 1: labels 0 0 0 0 1 1, predictions 0 0 0 0 1 0: F1 8/9, 2/3.
  assert t1["pixel"]["model"]["macro_f1"] == pytest.approx(7 / 9)
  # Parcels (votes at each tier, ties → lowest id): tier 3 truth 0 1 2 3 vote 0 0 2 2;
  # tier 2 truth 0 0 1 2 vote 0 0 1 1 (F1 1, 2/3, 0); tier 1 truth 0 0 0 1 vote 0 0 0 0.
  assert t3["parcel"]["model"]["overall_accuracy"] == pytest.approx(0.5)
  assert t2["parcel"]["model"]["overall_accuracy"] == pytest.approx(0.75)
  assert t2["parcel"]["model"]["macro_f1"] == pytest.approx(5 / 9)
  assert t1["parcel"]["model"]["overall_accuracy"] == pytest.approx(0.75)
  assert t2["per_region"]["north"]["model"]["macro_f1"] == pytest.approx(7 / 9)
  assert t2["confusion_matrix"]["pixel_model"] == [[3, 0, 0], [0, 1, 0], [0, 1, 1]]
  md = evaluate.markdown({"split": "test", "checkpoint": "best", **out})
  assert "| 2 (3 classes) | 0.7778 | 0.8333 | 0.5556 | 0.7500 |" in md


def test_joint_consistency_is_the_best_path_and_never_contradicts_tier2():
  rng = np.random.default_rng(1)
  logits = {f"tier{t}": jnp.asarray(rng.normal(size=(200, k)) * 3, jnp.float32)
            for t, k in zip((1, 2, 3), TREE.sizes)}
  scores = consistent_scores(logits, TREE, "joint")
  lp = {k: np.asarray(jax.nn.log_softmax(v)) for k, v in logits.items()}
  brute = np.stack([lp["tier3"][:, c] + lp["tier2"][:, TREE.tier2_of[c]] +
                    lp["tier1"][:, TREE.tier1_of[c]] for c in range(4)], -1)
  np.testing.assert_array_equal(np.asarray(scores).argmax(-1), brute.argmax(-1))
  np.testing.assert_allclose(np.exp(np.asarray(scores)).sum(-1), 1.0, rtol=1e-5)
  out = {k: np.asarray(v) for k, v in tier_outputs(scores, TREE).items()}
  assert (TREE.parents(2)[out["tier3"]] == out["tier2"]).all()
  assert (TREE.tier1_of_tier2()[out["tier2"]] == out["tier1"]).all()
  # Without consistency the tier-3 head alone decides, and it can contradict tier 2.
  raw = np.asarray(consistent_scores(logits, TREE, "none")).argmax(-1)
  assert (TREE.parents(2)[raw] != lp["tier2"].argmax(-1)).any()


def test_joint_rule_by_hand():
  # Tier 3 prefers maize a little, tier 2 says oilseed firmly: the path picks rapeseed.
  logits = {"tier1": jnp.log(jnp.array([0.9, 0.1])),
            "tier2": jnp.log(jnp.array([0.2, 0.7, 0.1])),
            "tier3": jnp.log(jnp.array([0.1, 0.4, 0.35, 0.15]))}
  assert int(jnp.argmax(consistent_scores(logits, TREE, "none"))) == 1
  assert int(jnp.argmax(consistent_scores(logits, TREE, "joint"))) == 2
  with pytest.raises(UserError, match="unknown consistency 'greedy'"):
    consistent_scores(logits, TREE, "greedy")


def model_cfg(**model):
  c = get_config("tiny").model
  c.update(model)
  return c


X = jax.random.normal(jax.random.key(1), (2, 4, 8, 8, 4))


def test_hierarchical_model_outputs_and_consistency():
  cfg = model_cfg()
  cfg.head.kind = "hierarchical"
  model = build_model(cfg, 4, tree=TREE)
  v = model.init(jax.random.key(0), X)
  tiers = model.apply(v, X, tiers=True)
  assert {k: a.shape for k, a in tiers.items()} == {
      "tier1": (2, 8, 8, 2), "tier2": (2, 8, 8, 3), "tier3": (2, 8, 8, 4)}
  scores = model.apply(v, X)
  assert scores.shape == (2, 8, 8, 4) and scores.dtype == jnp.float32
  out = {k: np.asarray(a) for k, a in tier_outputs(scores, TREE).items()}
  assert (TREE.parents(2)[out["tier3"]] == out["tier2"]).all()
  # Same parameters as the flat model but the last 1×1 conv: K1 + K2 + K3 outputs
  # (the flat model's shapes only: eval_shape, no initialisation to compile).
  flat = build_model(model_cfg(), 4)
  n = lambda vs: sum(p.size for p in jax.tree.leaves(vs["params"]))
  width = cfg.unet.widths[0]
  assert n(v) - n(jax.eval_shape(flat.init, jax.random.key(0), X)) == (width + 1) * (2 + 3)
  with pytest.raises(ValueError, match="needs the class tree"):
    build_model(cfg, 4)


def test_tier_loss_by_hand():
  label = jnp.array([[[0, 2, 255]]])
  logits = {"tier1": jnp.zeros((1, 1, 3, 2)), "tier2": jnp.zeros((1, 1, 3, 3)),
            "tier3": jnp.zeros((1, 1, 3, 4))}
  loss, n = losses.tier_loss(logits, label, tree=TREE, tier_weights=(0.1, 0.5, 1.0))
  # Uniform logits: CE = log K per tier.
  assert float(loss) == pytest.approx(0.1 * np.log(2) + 0.5 * np.log(3) + np.log(4), rel=1e-6)
  assert int(n) == 2
  flat, _ = losses.tier_loss({"tier3": logits["tier3"]}, label, tree=TREE,
                             tier_weights=(0.1, 0.5, 1.0))
  ce, _ = losses.cross_entropy(logits["tier3"], label)
  assert float(flat) == pytest.approx(float(ce))
  w = losses.tier_class_weights([100, 0, 25, 25], TREE, "inv")
  # Tier 2 counts 100, 25, 25 → 1/n normalised to mean 1: 1/3, 4/3, 4/3.
  np.testing.assert_allclose(w["tier2"], [1 / 3, 4 / 3, 4 / 3], rtol=1e-6)
  np.testing.assert_allclose(w["tier3"][1], 0.0)


def test_attention_encoder_shapes_and_pixel_order_equivariance():
  enc = AttentionEncoder(features=6, d_model=8, heads=2, key_dim=4)
  x = jax.random.normal(jax.random.key(2), (10, 12, 4))
  v = enc.init(jax.random.key(0), x)
  y = enc.apply(v, x)
  assert y.shape == (10, 6) and y.dtype == jnp.float32
  assert enc.apply(v, x.reshape(2, 5, 12, 4)).shape == (2, 5, 6)
  perm = np.random.default_rng(0).permutation(10)
  np.testing.assert_allclose(enc.apply(v, x[perm]), y[perm], atol=1e-6)
  # The month's position matters: reversing time changes the features.
  assert not np.allclose(enc.apply(v, x[:, ::-1]), y, atol=1e-3)
  with pytest.raises(UserError, match="multiple of heads=3"):
    AttentionEncoder(d_model=8, heads=3).init(jax.random.key(0), x)


def test_attention_mask_ignores_gap_filled_months():
  enc = AttentionEncoder(features=6, d_model=8, heads=2, key_dim=4)
  x = jax.random.normal(jax.random.key(2), (3, 12, 4))
  v = enc.init(jax.random.key(0), x)
  valid = np.ones((3, 12), bool)
  valid[:, 5] = False
  changed = x.at[:, 5].set(100.0)               # a gap-filled month's values do not count
  np.testing.assert_allclose(enc.apply(v, changed, valid=valid), enc.apply(v, x, valid=valid),
                             atol=1e-5)
  none_valid = np.zeros((3, 12), bool)          # no valid month: all months count
  np.testing.assert_allclose(enc.apply(v, x, valid=none_valid), enc.apply(v, x), atol=1e-6)


@pytest.mark.parametrize("mode", ["channel", "mask"])
def test_models_take_valid_counts(mode):
  cfg = model_cfg(encoder="attention", valid_count=mode)
  model = build_model(cfg, 4)
  count = jnp.ones(X.shape[:-1]).at[:, 0].set(0)
  v = model.init(jax.random.key(0), X, valid_count=count)
  assert model.apply(v, X, valid_count=count).shape == (2, 8, 8, 4)
  with pytest.raises(ValueError, match="needs the per-month valid-observation counts"):
    model.apply(v, X)
  if mode == "mask":
    with pytest.raises(UserError, match="needs model.encoder='attention'"):
      build_model(model_cfg(valid_count="mask"), 4).init(jax.random.key(0), X, valid_count=count)


def test_config_variants_compose():
  c = get_config("attention,demo")
  assert c.model.encoder == "attention" and c.model.attention.d_model == 32
  assert c.data.builder_config == "demo" and "kernel_size" not in c.cv.grid
  c = get_config("demo,compare")
  assert [s for s in cv.settings(c.cv.grid)][-1] == {
      "model__head__kind": "hierarchical", "model__encoder": "attention"}
  assert get_config("tiny,hierarchical").model.head.kind == "hierarchical"
  assert list(cv.settings(get_config("demo,validcount").cv.grid)) == [
      {"model__valid_count": "none"}, {"model__valid_count": "channel"}]
  assert [s["model__valid_count"] for s in cv.settings(get_config(
      "validcount,attention").cv.grid)] == ["none", "channel", "mask"]
  with pytest.raises(UserError, match=r"unknown config variant\(s\) \['tne'\]"):
    get_config("tne")


def test_cv_rarest_classes_and_fold_scores_by_hand():
  assert cv.rarest_classes([50, 0, 5, 10, 5, 7, 99], 3) == [2, 4, 5]
  cm = np.array([[3, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 2]])
  s = cv.fold_scores(cm, TREE, rare=[1, 2])   # maize predicted once, never true: F1 0
  # rapeseed: P 1, R 1/2 → 2/3; maize: 0 → mean 1/3.
  assert s["rare2_f1"] == pytest.approx(1 / 3)
  # Tier 2: [[4, 0, 0], [0, 1, 1], [0, 0, 2]] → F1 1, 2/3, 4/5.
  assert s["tier2_macro_f1"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)
  assert s["tier3_macro_f1"] == pytest.approx((6 / 7 + 0 + 2 / 3 + 0.8) / 4)
  assert np.isnan(cv.fold_scores(np.diag([1, 0, 0, 0]), TREE, rare=[2])["rare1_f1"])
  assert list(itertools.islice(cv.settings({"a": (1, 2)}), 2)) == [{"a": 1}, {"a": 2}]


def test_tier_legend_names_and_first_member_colours():
  from cropcontracts import nomenclature
  nom = nomenclature.load("v1")
  names, colors = hierarchy.tier_legend(nom, 2)
  assert names == list(nom.tier2_names) and len(colors) == len(names)
  for g, name in enumerate(names):
    assert colors[g] == nom.colors[list(nom.tier2).index(name)]   # its first class's
    assert name == nom.tier2[int(np.flatnonzero(nom.tier2_of() == g)[0])]  # id order
  assert hierarchy.tier_legend(nom, 1)[0] == list(nom.tier1_names)
  assert hierarchy.tier_legend(nom, 3) == (list(nom.tier3), list(nom.colors))
