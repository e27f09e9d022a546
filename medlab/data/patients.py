"""Patient cohorts with a clinical table *and* an image per patient, for multimodal lessons.

:func:`covid_cohort` draws suspected COVID-19 patients from a stated causal model
(below), renders each patient's axial CT slice with :func:`medlab.data.phantoms.ct_slice`
(lesion burden driven by the patient's latent severity) and returns both together
as a :class:`Cohort`. :func:`load_cohort` reads the ``DATA`` parameter of a lesson:
``"phantom"`` for this generator, or ``"folder:<path>"`` for your own table and
images in the layout of :func:`read_cohort_folder`. (No public data set pairs
clinical tables with CT images of the same patients; Mei et al. 2020 did not
release theirs.)

The causal model (each patient independently; ``sigmoid(z) = 1 / (1 + exp(-z))``)::

    exposure   E ~ Bernoulli(exposure_rate)                 close contact / outbreak area
    infected   I ~ Bernoulli(infected_if_exposed if E else infected_if_not)
    other      O ~ Bernoulli(other_pneumonia_rate) if not I  another pneumonia (bacterial, ...)
    age        A ~ Normal(45, 15), clipped to 18..90          independent of I
    onset      D ~ Uniform(0, 10) days since symptom onset   latent
    severity   S = sigmoid(-0.6 + 0.05 (A - 45) + Z), Z ~ Normal(0, 1), if I; else 0   latent
    CT lesion  present if (I and D >= 10 * normal_ct_rate) or O
               involvement (fraction of lung) = 0.04 + 0.5 S U1 if I, 0.03 + 0.25 U2 if O
               (U1 ~ Uniform(0.5, 1.5), U2 ~ Uniform(0, 1)); consolidation fraction ~ Beta(2, 7)
               (mean 0.22) if I, Beta(4, 4) (mean 0.5) if O: ground glass dominates COVID-19
    fever      ~ Bernoulli(0.35 + 0.25 I + 0.30 O)
    cough      ~ Bernoulli(0.50 + 0.10 I + 0.25 O)
    wbc        ~ Normal(7.0 - 1.0 I + 4.0 O, 1.8) x 10^9/L, clipped to 1.5..25
    lymphocytes ~ Normal(1.8 - 0.2 I - 0.6 I S, 0.5) x 10^9/L, clipped to 0.2..4
    time to severe disease T (days, infected only): Weibull(shape 1.5), cumulative hazard
               t^1.5 exp(4 (S - 0.35) + 0.02 (A - 45) + log(base_hazard)) (proportional hazards);
               T = inf if not I
    censoring  C = min(follow_up, Exponential(mean dropout_mean)); time = min(T, C), event = T <= C

So infection shows in the image only when lesions have appeared (not in the first
``10 * normal_ct_rate`` days) and is then confused with other pneumonias, which the
table tells apart (white cells, lymphocytes); exposure and lymphopenia carry signal the
image never sees. The recorded columns include the latent variables and each finding's
true size and contrast, for analysis; a model must be given only :data:`CLINICAL_COLUMNS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, ImageReadError, ParameterError

__all__ = ["Cohort", "covid_cohort", "load_cohort", "read_cohort_folder", "split_cohort", "CLINICAL_COLUMNS",
           "TRUTH_COLUMNS", "FOLDER_TABLE"]

#: The columns a model may use: what a clinic records when the patient arrives.
CLINICAL_COLUMNS = ["age", "fever", "cough", "wbc", "lymphocytes", "exposure"]
#: Columns only the generator knows (latent causes and the findings' true size and contrast).
TRUTH_COLUMNS = ["severity", "days_since_onset", "other_pneumonia", "normal_ct", "involvement",
                 "consolidation_fraction", "lesion_contrast_hu", "time_to_severe"]
#: The table of a ``folder:<path>`` cohort.
FOLDER_TABLE = "patients.csv"
_FOLDER_REQUIRED = ["patient_id", "image", *CLINICAL_COLUMNS, "infected", "normal_ct", "time", "event"]


@dataclass
class Cohort:
    """Patients with a clinical table and one image each, in the same order.

    Attributes:
        table: a pandas DataFrame, one row per patient: ``patient_id``, the
            :data:`CLINICAL_COLUMNS`, the label ``infected`` (0/1), ``time``
            (days to severe disease or to censoring) and ``event`` (1 severe
            disease observed, 0 censored) where known, and for phantoms the
            :data:`TRUTH_COLUMNS`.
        images: float32 ``(N, 1, S, S)`` in ``[0, 1]`` (CT in the wide window,
            -1100 to +400 HU).
        lung, lesion: ``(N, S, S)`` masks where known (phantoms: lung boolean,
            lesion uint8 0 background, 1 ground glass, 2 consolidation), else None.
        source: ``"phantom"`` or the folder read.
        params: the generator's arguments (phantoms).
    """

    table: object
    images: np.ndarray
    lung: np.ndarray | None = None
    lesion: np.ndarray | None = None
    source: str = "phantom"
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, index) -> "Cohort":
        """The patients at ``index`` (integer positions or a boolean mask), as a new cohort."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Cohort(self.table.iloc[index].reset_index(drop=True), self.images[index], pick(self.lung),
                      pick(self.lesion), self.source, dict(self.params))

    @property
    def labels(self) -> np.ndarray:
        """``infected`` as int64 ``(N,)``."""
        return self.table["infected"].to_numpy(dtype=np.int64)

    def clinical(self) -> np.ndarray:
        """The :data:`CLINICAL_COLUMNS` as a float64 array ``(N, 6)``, in that order."""
        return self.table[CLINICAL_COLUMNS].to_numpy(dtype=np.float64)

    def __repr__(self) -> str:
        return (f"Cohort({self.source}: {len(self)} patients, images {tuple(self.images.shape[1:])}, "
                f"infected {self.labels.mean():.1%})")


def _check_probability(name, value):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ParameterError(f"{name} must be a probability between 0 and 1, got {value}")
    return value


def covid_cohort(n: int, *, seed: int = 0, size: int = 64, exposure_rate: float = 0.3,
                 infected_if_exposed: float = 0.75, infected_if_not: float = 0.34, other_pneumonia_rate: float = 0.3,
                 normal_ct_rate: float = 0.2, base_hazard: float = 0.002, follow_up: float = 28.0,
                 dropout_mean: float = 60.0, noise: float = 20.0, lesion_contrast: float = 1.0,
                 device=None) -> Cohort:
    """Draw ``n`` suspected COVID-19 patients from the causal model of this module's docstring.

    Args:
        n: patients.
        seed: seed of every random draw (table and images).
        size: side of the CT slices in pixels.
        exposure_rate: P(exposure).
        infected_if_exposed, infected_if_not: P(infected | exposure) and
            P(infected | no exposure); the defaults give about 46 % infected
            (Mei et al. 2020: 419 of 905, 46.3 %).
        other_pneumonia_rate: P(another pneumonia, with lesions on CT | not infected).
        normal_ct_rate: fraction of infected patients seen before their lesions
            appear (normal CT).
        base_hazard: scale of the hazard of severe disease (per day, at the
            reference patient).
        follow_up: days of follow-up; later progressions are censored.
        dropout_mean: mean days to loss to follow-up (exponential).
        noise: CT noise in HU.
        lesion_contrast: scale of the lesions' HU rise (1 as in the CT phantoms).
        device: where the CT slices are rendered (``None`` or ``"cpu"``, ``"cuda"``,
            ``"auto"``; see :func:`medlab.data.phantoms.ct_slice`). The table is the
            same on every device.

    Returns:
        A :class:`Cohort` with ground truth: ``normal_ct`` (no lesion on the
        slice), ``involvement`` (fraction of lung with lesion: the finding's
        size), ``lesion_contrast_hu`` (mean HU of the lesion minus the mean HU
        of the rest of the lung: its contrast; 0 without a lesion),
        ``consolidation_fraction``, ``severity``, ``days_since_onset``,
        ``other_pneumonia`` and ``time_to_severe`` (inf when never).
    """
    import pandas as pd

    from .phantoms import ct_slice, window

    n = int(n)
    if n < 1:
        raise ParameterError(f"n must be a positive number of patients, got {n}")
    for name in ("exposure_rate", "infected_if_exposed", "infected_if_not", "other_pneumonia_rate",
                 "normal_ct_rate"):
        _check_probability(name, locals()[name])
    for name, value in (("base_hazard", base_hazard), ("follow_up", follow_up), ("dropout_mean", dropout_mean)):
        if not value > 0:
            raise ParameterError(f"{name} must be positive, got {value}")
    rng = np.random.default_rng(seed)
    exposure = rng.random(n) < exposure_rate
    infected = rng.random(n) < np.where(exposure, infected_if_exposed, infected_if_not)
    other = ~infected & (rng.random(n) < other_pneumonia_rate)
    age = np.clip(rng.normal(45, 15, n), 18, 90).round()
    onset = rng.uniform(0, 10, n)
    severity = np.where(infected, 1 / (1 + np.exp(-(-0.6 + 0.05 * (age - 45) + rng.normal(0, 1, n)))), 0.0)
    lesions = (infected & (onset >= 10 * normal_ct_rate)) | other
    involvement = np.where(infected, 0.04 + 0.5 * severity * rng.uniform(0.5, 1.5, n), 0.03 + 0.25 * rng.random(n))
    consolidation = np.where(infected, rng.beta(2, 7, n), rng.beta(4, 4, n))
    fever = rng.random(n) < 0.35 + 0.25 * infected + 0.30 * other
    cough = rng.random(n) < 0.50 + 0.10 * infected + 0.25 * other
    wbc = np.clip(rng.normal(7.0 - 1.0 * infected + 4.0 * other, 1.8), 1.5, 25).round(1)
    lymphocytes = np.clip(rng.normal(1.8 - 0.2 * infected - 0.6 * infected * severity, 0.5), 0.2, 4).round(2)
    log_hazard = 4.0 * (severity - 0.35) + 0.02 * (age - 45) + np.log(base_hazard)
    shape = 1.5  # Weibull: cumulative hazard (t ** shape) * exp(log_hazard) -> proportional hazards
    time_to_severe = np.where(infected, (rng.exponential(1.0, n) / np.exp(log_hazard)) ** (1 / shape), np.inf)
    censor = np.minimum(follow_up, rng.exponential(dropout_mean, n))
    event = time_to_severe <= censor
    time = np.minimum(time_to_severe, censor)

    batch = ct_slice(n, size=size, seed=int(rng.integers(2 ** 31)), lesions=lesions, involvement=involvement,
                     consolidation_fraction=consolidation, noise=noise, lesion_contrast=lesion_contrast,
                     device=device)
    lung, lesion = batch.masks["lung"].astype(bool), batch.masks["lesion"]
    contrast = _lesion_contrast(batch.images[:, 0], lung, lesion > 0)
    table = pd.DataFrame({
        "patient_id": [f"P{seed % 10000:04d}-{i:05d}" for i in range(n)],
        "age": age.astype(np.int64), "fever": fever.astype(np.int64), "cough": cough.astype(np.int64),
        "wbc": wbc, "lymphocytes": lymphocytes, "exposure": exposure.astype(np.int64),
        "infected": infected.astype(np.int64), "time": time.round(2), "event": event.astype(np.int64),
        "severity": severity, "days_since_onset": onset, "other_pneumonia": other.astype(np.int64),
        "normal_ct": (~lesions).astype(np.int64), "involvement": batch.attrs["involvement"].astype(np.float64),
        "consolidation_fraction": batch.attrs["consolidation_fraction"].astype(np.float64),
        "lesion_contrast_hu": contrast, "time_to_severe": time_to_severe,
    })
    images = window(batch.images, "wide").astype(np.float32)
    params = dict(n=n, seed=seed, size=size, exposure_rate=exposure_rate, infected_if_exposed=infected_if_exposed,
                  infected_if_not=infected_if_not, other_pneumonia_rate=other_pneumonia_rate,
                  normal_ct_rate=normal_ct_rate, base_hazard=base_hazard, follow_up=follow_up,
                  dropout_mean=dropout_mean, noise=noise, lesion_contrast=lesion_contrast)
    return Cohort(table, images, lung, lesion.astype(np.uint8), "phantom", params)


def _lesion_contrast(hu: np.ndarray, lung: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """Per slice: mean HU inside the lesion minus mean HU of the lesion-free lung (0 without a lesion)."""
    inside = (hu * lesion).sum((1, 2)) / np.maximum(lesion.sum((1, 2)), 1)
    healthy = lung & ~lesion
    outside = (hu * healthy).sum((1, 2)) / np.maximum(healthy.sum((1, 2)), 1)
    return np.where(lesion.any((1, 2)), inside - outside, 0.0).astype(np.float64)


def read_cohort_folder(path, size: int = 64) -> Cohort:
    """Read a cohort from a folder: ``patients.csv`` and one image file per patient.

    Layout::

        <path>/patients.csv       one row per patient, columns (header names exactly):
                                  patient_id, image, age, fever, cough, wbc, lymphocytes, exposure,
                                  infected, normal_ct, time, event; optionally split (train / val / test)
        <path>/<image>            the file the ``image`` column names, relative to <path>:
                                  DICOM, NIfTI, .npy/.npz (in HU, a 3D volume gives its middle axial slice)
                                  or PNG/JPEG (grey levels, taken as already windowed)

    ``fever``, ``cough``, ``exposure``, ``infected`` (the reference test, e.g. RT-PCR) and
    ``normal_ct`` (a radiologist read the CT as normal) are 0/1; ``age`` in years, ``wbc`` and
    ``lymphocytes`` in 10^9/L; ``time`` the days from the CT to severe disease (``event`` 1) or
    to the last follow-up (``event`` 0). Images in HU are shown through the wide
    window (-1100 to +400 HU), resized to ``size`` x ``size``.

    Raises:
        DataNotFoundError: no folder or no ``patients.csv``.
        ParameterError: missing columns, values out of range, a missing image file.
        ImageReadError: an image that cannot be read.
    """
    import pandas as pd

    from ..io import read_image
    from .phantoms import window

    root = Path(path).expanduser()
    csv = root / FOLDER_TABLE
    if not csv.is_file():
        raise DataNotFoundError(f"cohort folder {root}", f"put the clinical table in {csv} and the images beside it "
                                f"(layout: help(medlab.data.patients.read_cohort_folder))")
    table = pd.read_csv(csv)
    missing = [c for c in _FOLDER_REQUIRED if c not in table.columns]
    if missing:
        raise ParameterError(f"{csv}: missing column(s) {missing}; required: {_FOLDER_REQUIRED}")
    if len(table) == 0:
        raise ParameterError(f"{csv} has no patients")
    for column in ("fever", "cough", "exposure", "infected", "normal_ct", "event"):
        if not table[column].isin([0, 1]).all():
            raise ParameterError(f"{csv}: column {column!r} must be 0 or 1 in every row")
    if table[_FOLDER_REQUIRED].isna().any().any():
        raise ParameterError(f"{csv}: empty cells in {_FOLDER_REQUIRED}; fill or drop those patients first")
    if not (pd.to_numeric(table["time"], errors="coerce") >= 0).all():
        raise ParameterError(f"{csv}: column 'time' must hold days (numbers >= 0) in every row")
    images = np.empty((len(table), 1, size, size), np.float32)
    for i, name in enumerate(table["image"]):
        file = root / str(name)
        if not file.is_file():
            raise ParameterError(f"{csv}, patient {table['patient_id'].iloc[i]}: image {file} does not exist")
        image = read_image(file)
        array = np.asarray(image.array, dtype=np.float32)
        photo = str(image.meta.get("format", "")).lower() in ("png", "jpeg", "jpg")
        if photo and array.ndim == 3 and array.shape[-1] in (3, 4):
            array = array[..., :3].mean(-1)  # grey levels
        if array.ndim == 3:
            array = array[array.shape[0] // 2]
        if array.ndim != 2:
            raise ImageReadError(file, f"expected a 2D slice or a 3D volume, got shape {array.shape}")
        hu = not photo
        array = window(array, "wide") if hu else array / max(float(array.max()), 1.0)
        images[i, 0] = _resize(array, size)
    table["patient_id"] = table["patient_id"].astype(str)
    return Cohort(table, images, None, None, str(root), {"size": size})


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def load_cohort(data: str, n: int, *, seed: int = 0, size: int = 64, device=None, **knobs) -> Cohort:
    """The cohort a lesson's ``DATA`` parameter names.

    Args:
        data: ``"phantom"`` (:func:`covid_cohort`) or ``"folder:<path>"``
            (:func:`read_cohort_folder`).
        n: patients to draw (phantoms; a folder gives all its patients).
        seed, size: as in :func:`covid_cohort`.
        device: where phantom CT slices are rendered (:func:`covid_cohort`); a
            folder's images are read from files, so it does not apply to them.
        **knobs: passed to :func:`covid_cohort` (phantoms only).

    Raises:
        ParameterError: any other value of ``data``.
    """
    text = str(data).strip()
    if text.lower() == "phantom":
        return covid_cohort(n, seed=seed, size=size, device=device, **knobs)
    if text.lower().startswith("folder:") and text[7:].strip():
        return read_cohort_folder(text[7:].strip(), size=size)
    raise ParameterError(
        f"DATA={data!r}: this lesson needs a clinical table and a CT image for every patient. No public data set "
        f"pairs the two (Mei et al. 2020 did not release theirs), so the choices are 'phantom' and "
        f"'folder:<path>' with {FOLDER_TABLE} and image files (see help(medlab.data.patients.read_cohort_folder)).")


def split_cohort(cohort: Cohort, n_val: int, n_test: int, seed: int = 0) -> dict[str, Cohort]:
    """Train, validation and test cohorts.

    A ``split`` column (train / val / test) in the table decides where it is
    present; otherwise the patients are shuffled with ``seed`` and stratified by
    ``infected``, ``n_val`` and ``n_test`` patients going to validation and test,
    the rest to training.

    Raises:
        ParameterError: the sizes leave no training patients, or a ``split``
            column with other values or an empty split.
    """
    table = cohort.table
    if "split" in table.columns:
        names = table["split"].astype(str).str.strip().str.lower()
        if not names.isin(["train", "val", "test"]).all():
            raise ParameterError("the split column may hold only train, val and test")
        out = {name: cohort.subset((names == name).to_numpy()) for name in ("train", "val", "test")}
    else:
        n, n_val, n_test = len(cohort), int(n_val), int(n_test)
        if n_val < 1 or n_test < 1 or n_val + n_test >= n:
            raise ParameterError(f"{n} patients cannot give {n_val} validation and {n_test} test patients and "
                                 f"still leave some for training")
        rng = np.random.default_rng(seed)
        labels = cohort.labels
        order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)])
        share = np.empty(n, np.float64)  # each class spread evenly over the split positions
        for c in (0, 1):
            members = labels[order] == c
            share[members] = (np.arange(members.sum()) + rng.random()) / members.sum()
        order = order[np.argsort(share, kind="stable")]
        parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        out = {name: cohort.subset(np.sort(parts[name])) for name in ("train", "val", "test")}
    empty = [name for name, part in out.items() if len(part) == 0]
    if empty:
        raise ParameterError(f"the {', '.join(empty)} split(s) would be empty")
    return out
