"""Phantom generators: determinism, shapes, balance, ground truth consistent with the pixels, difficulty."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab.data import phantoms as P
from medlab.data.dataset import PhantomDataset, make_splits, split_seeds
from medlab.errors import ParameterError

GENERATORS = {
    "chest_xray": lambda n, size=32, seed=0, **kw: P.chest_xray(n, size=size, seed=seed, **kw),
    "ct_slice": lambda n, size=32, seed=0, **kw: P.ct_slice(n, size=size, seed=seed, **kw),
    "lung_ultrasound": lambda n, size=32, seed=0, **kw: P.lung_ultrasound(n, size=size, seed=seed, **kw),
    "lung_ultrasound_clips": lambda n, size=32, seed=0, **kw: P.lung_ultrasound_clips(n, frames=4, size=size, seed=seed, **kw),
    "us_nodule": lambda n, size=32, seed=0, **kw: P.us_nodule(n, size=size, seed=seed, **kw),
}


def _same(a: P.PhantomBatch, b: P.PhantomBatch) -> bool:
    return (np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
            and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
            and all(np.array_equal(np.asarray(a.attrs[k]), np.asarray(b.attrs[k])) for k in a.attrs))


@pytest.mark.parametrize("kind", GENERATORS)
def test_deterministic_for_a_seed_and_different_across_seeds(kind):
    gen = GENERATORS[kind]
    a, b, c = gen(12, seed=3), gen(12, seed=3), gen(12, seed=4)
    assert _same(a, b)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("kind", GENERATORS)
def test_shapes_dtypes_and_balanced_labels(kind):
    n, size = 22, 32
    b = GENERATORS[kind](n, size=size)
    k = len(b.class_names)
    clip = kind.endswith("clips")
    frames = (4,) if clip else ()
    assert b.images.dtype == np.float32 and b.images.shape == (n, *frames, 1, size, size)
    assert b.labels.dtype == np.int64 and b.labels.shape == (n,)
    assert np.isfinite(b.images).all()
    for name, m in b.masks.items():
        assert m.dtype == np.int64 and m.shape == (n, *frames, size, size), name
        assert m.min() >= 0 and m.max() < len(b.mask_classes[name]), name
    assert b.default_mask in b.masks
    for name, v in b.attrs.items():
        assert len(v) == n, name
    counts = np.bincount(b.labels, minlength=k)
    assert counts.max() - counts.min() <= 1
    if b.units == "a.u.":
        assert b.images.min() >= 0.0 and b.images.max() <= 1.0
    assert b.attrs["domain"].tolist() == [0] * n
    assert len(b) == n and kind.split("_clips")[0] in b.kind


def test_chest_xray_lesions_live_in_the_lungs_and_brighten_them():
    kw = dict(size=64, seed=7, classes=("normal", "pneumonia", "covid"))
    sick = P.chest_xray(30, **kw)
    clean = P.chest_xray(30, lesion_contrast=0.0, **kw)  # same anatomy and noise, no opacity
    lung, lesion = sick.masks["lung"], sick.masks["lesion"]
    assert np.array_equal(lung, clean.masks["lung"])
    assert not (lesion & (lung == 0)).any(), "lesion outside the lungs"
    normal = sick.labels == 0
    assert lesion[normal].sum() == 0 and (lesion[~normal].sum(axis=(1, 2)) > 0).all()
    diff = sick.images[:, 0] - clean.images[:, 0]
    assert np.abs(diff[normal]).max() == 0.0
    from scipy.ndimage import binary_dilation

    for i in np.flatnonzero(~normal):
        inside = diff[i][lesion[i] == 1].mean()
        near_lung = binary_dilation(lung[i] == 1, iterations=2)  # the lung border is anti-aliased
        outside = np.abs(diff[i][~near_lung]).max()
        assert inside > 0.05 and outside < 1e-6
    # attributes agree with the masks
    np.testing.assert_allclose(sick.attrs["lesion_area"], lesion.mean(axis=(1, 2)), rtol=1e-5)
    assert set(sick.attrs["side"][sick.labels == 2]) == {3}  # COVID-19: bilateral
    assert set(sick.attrs["side"][sick.labels == 1]) <= {1, 2}  # bacterial: one lung


def test_chest_xray_marker_correlation_is_the_shortcut_knob():
    b1 = P.chest_xray(200, size=32, seed=1, marker=True, marker_correlation=1.0)
    assert np.array_equal(b1.attrs["marker_side"], (b1.labels > 0).astype(int))
    b0 = P.chest_xray(400, size=32, seed=1, marker=True, marker_correlation=0.0)
    agree = (b0.attrs["marker_side"] == (b0.labels > 0)).mean()
    assert 0.4 < agree < 0.6
    none = P.chest_xray(10, size=32, seed=1)
    assert (none.attrs["marker_side"] == -1).all()
    # the marker is drawn: a bright square in the chosen top corner
    top_left = b1.images[:, 0, 1:5, 1:8].mean(axis=(1, 2))
    top_right = b1.images[:, 0, 1:5, -8:-1].mean(axis=(1, 2))
    right = b1.attrs["marker_side"] == 1
    assert (top_right[right] > top_left[right]).mean() > 0.9


def test_ct_slice_is_in_hounsfield_units_with_medseg_labels():
    b = P.ct_slice(24, size=64, seed=2)
    hu = b.images[:, 0]
    assert b.units == "HU"
    assert np.median(hu[:, :3, :3]) < -900  # corners are air
    lung, lesion = b.masks["lung"], b.masks["lesion"]
    assert not ((lesion > 0) & (lung == 0)).any()
    assert set(np.unique(lesion)) <= {0, 1, 2}
    normal = b.labels == 0
    assert lesion[normal].sum() == 0 and (lesion[~normal].sum(axis=(1, 2)) > 0).all()
    parenchyma = hu[(lung == 1) & (lesion == 0)].mean()
    ggo = hu[lesion == 1].mean()
    cons = hu[lesion == 2].mean()
    assert -950 < parenchyma < -650
    assert ggo > parenchyma + 150 and cons > ggo + 200
    inv = (lesion > 0).sum(axis=(1, 2)) / lung.sum(axis=(1, 2))
    np.testing.assert_allclose(b.attrs["involvement"], inv, rtol=1e-5)
    assert np.array_equal(b.attrs["severity"], P.mosmed_band(inv))
    assert P.mosmed_band([0, 0.1, 0.3, 0.6, 0.9]).tolist() == [0, 1, 2, 3, 4]
    shown = b.display("lung")
    assert shown.min() >= 0 and shown.max() <= 1


def test_lung_ultrasound_scores_follow_the_iclus_rules():
    b = P.lung_ultrasound(40, size=64, seed=3, probe="mixed")
    f = b.masks["findings"]
    assert np.array_equal(b.attrs["score"], b.labels)
    cons = (f == 4).sum(axis=(1, 2))
    assert (cons[b.labels == 2] > 0).all()  # score 2: consolidation below a broken pleura
    assert (cons[b.labels <= 1] == 0).all()
    bl = (f == 3).sum(axis=(1, 2))
    assert (bl[b.labels == 1] > 0).all() and (bl[b.labels == 3] > bl[b.labels == 1].mean()).all()
    assert ((f == 1).sum(axis=(1, 2)) > 0).all()  # a pleural line in every frame
    convex = b.attrs["probe"] == 0
    assert convex.any() and (~convex).any()
    outside = b.masks["sector"] == 0
    assert outside[convex].any() and not outside[~convex].any()
    assert b.images[:, 0][outside].max() == 0.0 and (f[outside] == 0).all()


def test_lung_ultrasound_clip_score_is_the_highest_frame_score():
    c = P.lung_ultrasound_clips(16, frames=6, size=32, seed=4)
    fs = c.attrs["frame_scores"]
    assert fs.shape == (16, 6)
    assert np.array_equal(fs.max(axis=1), c.labels)
    assert (fs <= c.labels[:, None]).all()
    # frames of one clip differ (breathing), but the chest wall above the pleura stays put
    assert not np.array_equal(c.images[:, 0], c.images[:, 1])


def test_us_nodule_mask_and_malignant_features():
    b = P.us_nodule(80, size=64, seed=5)
    m = b.masks["nodule"]
    assert (m.sum(axis=(1, 2)) > 10).all()
    np.testing.assert_allclose(b.attrs["lesion_area"], m.mean(axis=(1, 2)), rtol=1e-5)
    mal = b.labels == 1
    assert b.attrs["aspect"][mal].mean() < 1.0 < b.attrs["aspect"][~mal].mean()  # taller than wide
    assert b.attrs["echogenicity"][mal].mean() < b.attrs["echogenicity"][~mal].mean()
    assert b.attrs["n_calcifications"][mal].mean() > b.attrs["n_calcifications"][~mal].mean()
    assert b.attrs["severity"][mal].mean() > b.attrs["severity"][~mal].mean()
    # the echogenicity shows in the pixels: same scene rendered with lesion_contrast 0 (nodule as bright as the gland)
    flat = P.us_nodule(80, size=64, seed=5, lesion_contrast=0.0)
    assert np.array_equal(flat.masks["nodule"], m)
    echo = b.attrs["echogenicity"]
    for i in range(len(b)):
        inside = m[i] == 1
        delta = b.images[i, 0][inside].mean() - flat.images[i, 0][inside].mean()
        if echo[i] < 0.7:
            assert delta < -0.02, (i, echo[i], delta)
        elif echo[i] > 1.05 and not b.attrs["halo"][i]:
            assert delta > 0.0, (i, echo[i], delta)


@pytest.mark.parametrize("kind", ["chest_xray", "ct_slice", "us_nodule", "lung_ultrasound"])
def test_domain_shift_changes_pixels_not_ground_truth(kind):
    gen = GENERATORS[kind]
    a, b = gen(8, seed=9), gen(8, seed=9, domain="B")
    assert not np.array_equal(a.images, b.images)
    assert np.array_equal(a.labels, b.labels)
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k])
    assert (b.attrs["domain"] == 1).all()
    c = gen(8, seed=9, intensity_scale=1.3, blur=1.0, resolution=0.5, noise_texture="correlated")
    assert not np.array_equal(a.images, c.images)


def test_knobs_are_validated():
    with pytest.raises(ParameterError):
        P.chest_xray(4, lesion_contrast=-1)
    with pytest.raises(ParameterError):
        P.chest_xray(4, classes=("normal", "flu"))
    with pytest.raises(ParameterError):
        P.ct_slice(4, size=8)
    with pytest.raises(ParameterError):
        P.lung_ultrasound(4, probe="phased")
    with pytest.raises(ParameterError):
        P.us_nodule(4, domain="Z")
    with pytest.raises(ParameterError):
        P.us_nodule(4, noise_texture="pink")
    with pytest.raises(TypeError):
        P.us_nodule(4, bogus=1)


def test_difficulty_knob_moves_the_signal():
    easy = P.chest_xray(40, size=32, seed=1, classes=("normal", "pneumonia"), lesion_contrast=2.0)
    hard = P.chest_xray(40, size=32, seed=1, classes=("normal", "pneumonia"), lesion_contrast=0.5)
    sick = easy.labels == 1
    gap_easy = (easy.images[sick, 0] * easy.masks["lesion"][sick]).sum() / easy.masks["lesion"][sick].sum()
    gap_hard = (hard.images[sick, 0] * hard.masks["lesion"][sick]).sum() / hard.masks["lesion"][sick].sum()
    assert gap_easy > gap_hard


def test_batch_subset_concat_and_window():
    a = P.chest_xray(6, size=32, seed=0)
    b = P.chest_xray(4, size=32, seed=1, domain="C")
    both = P.PhantomBatch.concat([a, b])
    assert len(both) == 10 and both.attrs["domain"].tolist() == [0] * 6 + [2] * 4
    sub = both.subset(both.labels == 0)
    assert (sub.labels == 0).all() and len(sub.masks["lesion"]) == len(sub)
    hu = np.array([-1350.0, -600.0, 150.0, 2000.0])
    np.testing.assert_allclose(P.window(hu, "lung"), [0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ParameterError):
        P.window(hu, "nope")


def test_make_splits_reproducible_disjoint_and_typed():
    s1 = make_splits("ct", 20, 6, 8, size=32, seed=5, target="mask")
    s2 = make_splits("ct_slice", 20, 6, 8, size=32, seed=5, target="mask")
    assert [len(s1[k]) for k in ("train", "val", "test")] == [20, 6, 8]
    for k in s1:
        assert torch.equal(s1[k].images, s2[k].images)
    flat = {k: s1[k].images.reshape(len(s1[k]), -1).numpy() for k in s1}
    for x, y in (("train", "val"), ("train", "test"), ("val", "test")):
        d = np.abs(flat[x][:, None] - flat[y][None]).sum(-1)
        assert d.min() > 0, f"{x} and {y} share an image"
    img, target = s1["train"][0]
    assert img.dtype == torch.float32 and img.shape == (1, 32, 32) and 0 <= img.min() and img.max() <= 1
    assert target.dtype == torch.int64 and target.shape == (32, 32)
    assert s1["train"].class_names == ["background", "ground-glass", "consolidation"]
    seeds = split_seeds(5)
    assert len(set(seeds.values())) == 3 and 5 not in seeds.values()
    # a split does not change when another split's size changes
    s3 = make_splits("ct", 20, 9, 8, size=32, seed=5, target="mask")
    assert torch.equal(s1["test"].images, s3["test"].images)
    with pytest.raises(ParameterError):
        make_splits("mri", 1, 1, 1)
    with pytest.raises(ParameterError):
        make_splits("chest_xray", 1, 1, 1, bogus=3)
    lab = PhantomDataset(P.chest_xray(4, size=32), target="label")
    _, y = lab[0]
    assert y.shape == () and lab.class_names == P.CXR_CLASSES


def test_default_tasks_are_not_solved_by_mean_intensity():
    from sklearn.metrics import roc_auc_score

    for kind in ("chest_xray", "ct_slice", "lung_ultrasound", "us_nodule"):
        b = GENERATORS[kind](400, size=32, seed=11)
        m = b.display().reshape(len(b), -1).mean(1)
        for c in range(len(b.class_names)):
            auc = roc_auc_score(b.labels == c, m)
            assert max(auc, 1 - auc) < 0.9, (kind, b.class_names[c], auc)


def _tiny_cnn(k):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, k))


def test_small_cnn_clearly_beats_a_linear_model_on_raw_pixels():
    """Chest X-ray normal vs pneumonia at 32x32: the lesion is local, so pixels alone are not enough."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    kw = dict(size=32, classes=("normal", "pneumonia"))
    train, test = P.chest_xray(400, seed=101, **kw), P.chest_xray(300, seed=202, **kw)
    x, y, xt, yt = train.images, train.labels, test.images, test.labels
    lin = LogisticRegression(max_iter=300, C=0.01).fit(x.reshape(len(x), -1), y)
    auc_linear = roc_auc_score(yt, lin.predict_proba(xt.reshape(len(xt), -1))[:, 1])
    mean = xt.reshape(len(xt), -1).mean(1)
    auc_mean = max(roc_auc_score(yt, mean), 1 - roc_auc_score(yt, mean))

    auc_cnn = _train_and_score(x, y, xt, yt)  # on one torch thread, as every test (conftest.py)
    print(f"AUROC mean-intensity {auc_mean:.3f}, linear {auc_linear:.3f}, CNN {auc_cnn:.3f}")
    assert auc_mean < 0.7
    assert auc_cnn > 0.85
    assert auc_cnn > auc_linear + 0.08


def _train_and_score(x, y, xt, yt, epochs=6, bs=32):
    from sklearn.metrics import roc_auc_score

    net = _tiny_cnn(2)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(x) + bs - 1) // bs))
    xt_, yt_ = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt_[idx]), yt_[idx]).backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        p = torch.softmax(net(torch.from_numpy(xt)), 1)[:, 1].numpy()
    return roc_auc_score(yt, p)
