"""The patient cohort of lesson 11 (medlab.data.patients): determinism, shapes, the stated causal model, folders.

The causal relations of the module docstring must hold in the data: exposure raises infection, infection lowers the
lymphocytes, another pneumonia raises the white cells, the normal-CT share of the infected is the one asked for,
only infected patients progress, censoring happens within the follow-up.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medlab.data import patients
from medlab.data.phantoms import ct_slice
from medlab.errors import DataNotFoundError, ParameterError


@pytest.fixture(scope="module")
def cohort():
    return patients.covid_cohort(1500, seed=3, size=32)


def test_same_seed_same_cohort_and_another_seed_another():
    a, b = patients.covid_cohort(40, seed=5, size=32), patients.covid_cohort(40, seed=5, size=32)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.lesion, b.lesion)
    c = patients.covid_cohort(40, seed=6, size=32)
    assert not np.array_equal(a.images, c.images) and not a.table["age"].equals(c.table["age"])


def test_shapes_columns_and_ranges(cohort):
    n = len(cohort)
    assert cohort.images.shape == (n, 1, 32, 32) and cohort.images.dtype == np.float32
    assert 0.0 <= cohort.images.min() and cohort.images.max() <= 1.0
    assert cohort.lung.shape == cohort.lesion.shape == (n, 32, 32)
    for column in ["patient_id", *patients.CLINICAL_COLUMNS, "infected", "time", "event", *patients.TRUTH_COLUMNS]:
        assert column in cohort.table, column
    assert cohort.clinical().shape == (n, 6) and cohort.labels.dtype == np.int64
    assert cohort.table["patient_id"].is_unique
    t = cohort.table
    assert t["age"].between(18, 90).all() and t["lymphocytes"].between(0.2, 4).all() and t["wbc"].between(1.5, 25).all()
    for column in ("fever", "cough", "exposure", "infected", "event", "normal_ct", "other_pneumonia"):
        assert set(t[column].unique()) <= {0, 1}, column


def test_prevalence_is_near_mei_et_al(cohort):
    assert 0.42 < cohort.labels.mean() < 0.51  # Mei et al. 2020: 46.3 %


def test_exposure_raises_infection_and_infection_lowers_lymphocytes(cohort):
    t = cohort.table
    exposed, unexposed = t.infected[t.exposure == 1].mean(), t.infected[t.exposure == 0].mean()
    assert exposed == pytest.approx(0.75, abs=0.07) and unexposed == pytest.approx(0.34, abs=0.05)
    assert t.lymphocytes[t.infected == 1].mean() < t.lymphocytes[t.infected == 0].mean() - 0.2
    assert t.fever[t.infected == 1].mean() > t.fever[(t.infected == 0) & (t.other_pneumonia == 0)].mean() + 0.15
    assert abs(t.age[t.infected == 1].mean() - t.age[t.infected == 0].mean()) < 2.5  # age does not cause infection


def test_severity_lowers_lymphocytes_among_the_infected(cohort):
    infected = cohort.table[cohort.table.infected == 1]
    assert np.corrcoef(infected.severity, infected.lymphocytes)[0, 1] < -0.2


def test_other_pneumonia_raises_white_cells_and_shows_on_ct(cohort):
    t = cohort.table
    assert (t.other_pneumonia[t.infected == 1] == 0).all()
    other = t[t.other_pneumonia == 1]
    assert other.wbc.mean() > t.wbc[t.infected == 1].mean() + 3
    assert (other.normal_ct == 0).all()
    assert other.consolidation_fraction.mean() > t.consolidation_fraction[(t.infected == 1) & (t.normal_ct == 0)].mean()


def test_normal_ct_rate_among_the_infected(cohort):
    t = cohort.table
    assert t.normal_ct[t.infected == 1].mean() == pytest.approx(0.2, abs=0.04)
    healthy = (t.infected == 0) & (t.other_pneumonia == 0)
    assert (t.normal_ct[healthy] == 1).all()


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_normal_ct_rate_at_its_limits(rate):
    t = patients.covid_cohort(200, seed=1, size=32, normal_ct_rate=rate).table
    assert t.normal_ct[t.infected == 1].mean() == rate


def test_findings_ground_truth_matches_the_masks(cohort):
    t = cohort.table
    lesion_pixels = (cohort.lesion > 0).sum((1, 2))
    assert np.array_equal(t.normal_ct.to_numpy() == 1, lesion_pixels == 0)
    assert (t.involvement[t.normal_ct == 1] == 0).all() and (t.lesion_contrast_hu[t.normal_ct == 1] == 0).all()
    visible = t[t.normal_ct == 0]
    assert (visible.involvement > 0).all()
    assert (visible.lesion_contrast_hu > 0).mean() > 0.98 and visible.lesion_contrast_hu.median() > 200  # denser
    infected = visible[visible.infected == 1]
    assert np.corrcoef(infected.severity, infected.involvement)[0, 1] > 0.5  # extent follows severity


def test_survival_only_infected_progress_and_censoring_within_follow_up(cohort):
    t = cohort.table
    assert (t.event[t.infected == 0] == 0).all() and np.isinf(t.time_to_severe[t.infected == 0]).all()
    assert (t.time <= 28.0 + 1e-9).all() and (t.time >= 0).all()
    infected = t[t.infected == 1]
    assert 0.15 < infected.event.mean() < 0.5  # most infected do not progress within follow-up: censored
    progressed = infected[infected.event == 1]
    assert np.allclose(progressed.time, progressed.time_to_severe.round(2))
    high, low = infected.severity > infected.severity.median(), infected.severity <= infected.severity.median()
    assert infected.event[high].mean() > infected.event[low].mean() + 0.1  # severity raises the hazard


def test_bad_arguments_are_named():
    with pytest.raises(ParameterError, match="normal_ct_rate"):
        patients.covid_cohort(10, normal_ct_rate=1.5)
    with pytest.raises(ParameterError, match="positive"):
        patients.covid_cohort(0)
    with pytest.raises(ParameterError, match="one value per slice"):
        ct_slice(4, 32, lesions=[1, 0])
    with pytest.raises(ParameterError, match="involvement"):
        ct_slice(2, 32, involvement=[0.2, 1.5])


def test_ct_slice_without_the_new_arguments_is_unchanged():
    a = ct_slice(12, 32, seed=9)
    b = ct_slice(12, 32, seed=9, lesions=a.labels)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks["lesion"], b.masks["lesion"])


def test_split_is_disjoint_stratified_and_sized(cohort):
    parts = patients.split_cohort(cohort, 200, 300, seed=0)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [1000, 200, 300]
    ids = [set(parts[k].table.patient_id) for k in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for part in parts.values():
        assert abs(part.labels.mean() - cohort.labels.mean()) < 0.02
    again = patients.split_cohort(cohort, 200, 300, seed=0)
    assert again["test"].table.patient_id.tolist() == parts["test"].table.patient_id.tolist()
    with pytest.raises(ParameterError, match="training"):
        patients.split_cohort(cohort, 1000, 500)


def test_unknown_data_names_the_choices():
    with pytest.raises(ParameterError, match="folder:"):
        patients.load_cohort("medseg-covid-ct", 10)


# ------------------------------------------------------------------------------ your own folder
def _write_folder(root, n=12):
    from PIL import Image

    source = patients.covid_cohort(n, seed=2, size=32)
    rows = []
    (root / "images").mkdir(parents=True)
    for i, row in enumerate(source.table.itertuples()):
        if i % 2:  # PNG: grey levels, already windowed
            name = f"images/{row.patient_id}.png"
            Image.fromarray((source.images[i, 0] * 255).round().astype(np.uint8)).save(root / name)
        else:  # .npy in HU
            name = f"images/{row.patient_id}.npy"
            np.save(root / name, source.images[i, 0] * 1500.0 - 1100.0)
        rows.append({"patient_id": row.patient_id, "image": name, **{c: getattr(row, c) for c in
                     [*patients.CLINICAL_COLUMNS, "infected", "normal_ct", "time", "event"]}})
    pd.DataFrame(rows).to_csv(root / patients.FOLDER_TABLE, index=False)
    return source


def test_a_folder_cohort_reads_table_and_images(tmp_path):
    source = _write_folder(tmp_path)
    cohort = patients.load_cohort(f"folder:{tmp_path}", n=999, size=32)
    assert len(cohort) == len(source) and cohort.images.shape == (len(source), 1, 32, 32)
    assert cohort.lung is None and cohort.lesion is None and cohort.source == str(tmp_path)
    assert np.allclose(cohort.clinical(), source.clinical())
    assert np.allclose(cohort.images, source.images, atol=1 / 255 + 1e-4)  # PNG rounding; HU exactly windowed
    parts = patients.split_cohort(cohort, 3, 3)
    assert sum(len(p) for p in parts.values()) == len(source)


def test_a_folder_split_column_decides(tmp_path):
    _write_folder(tmp_path)
    table = pd.read_csv(tmp_path / patients.FOLDER_TABLE)
    table["split"] = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    table.to_csv(tmp_path / patients.FOLDER_TABLE, index=False)
    parts = patients.split_cohort(patients.load_cohort(f"folder:{tmp_path}", 0, size=32), 1, 1)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [6, 3, 3]


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DataNotFoundError, match="patients.csv"):
        patients.load_cohort(f"folder:{tmp_path / 'nowhere'}", 0)
    _write_folder(tmp_path)
    table = pd.read_csv(tmp_path / patients.FOLDER_TABLE)
    table.drop(columns=["lymphocytes"]).to_csv(tmp_path / patients.FOLDER_TABLE, index=False)
    with pytest.raises(ParameterError, match="lymphocytes"):
        patients.load_cohort(f"folder:{tmp_path}", 0)
    table.assign(image="images/missing.png").to_csv(tmp_path / patients.FOLDER_TABLE, index=False)
    with pytest.raises(ParameterError, match="does not exist"):
        patients.load_cohort(f"folder:{tmp_path}", 0)
    table.assign(fever=2).to_csv(tmp_path / patients.FOLDER_TABLE, index=False)
    with pytest.raises(ParameterError, match="fever"):
        patients.load_cohort(f"folder:{tmp_path}", 0)


@pytest.mark.notebooks
def test_lesson_11_runs_on_a_folder_cohort(tmp_path):
    """The lesson's smoke profile on DATA='folder:...' (no masks, no hidden variables: those cells step aside)."""
    import json

    from medlab import runner

    data = tmp_path / "cohort"
    _write_folder(data, n=220)
    out = tmp_path / "run"
    results = runner.run_notebooks(["11"], profile="smoke", params={"DATA": f"folder:{data}", "DEVICE": "cpu"},
                                   out=out, timeout=600, log=lambda *a: None)
    assert results[0].status == "passed", f"{results[0].status}: {results[0].error}"
    recorded = json.loads((out / results[0].notebook / "metrics.json").read_text())
    assert recorded["params"]["DATA"] == f"folder:{data}"
    metrics = recorded.get("metrics", recorded)
    assert "cindex_true_extent" not in metrics and metrics["cindex_both"] is not None  # no hidden truth in a folder
