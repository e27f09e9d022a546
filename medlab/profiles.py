"""Run profiles: how big, how long and how many, as plain data.

A notebook never hard-codes sizes or epochs. It asks for a profile and reads
its fields::

    P = medlab.profiles.resolve("cpu")
    P.image_size, P.n_train, P.epochs

Profiles:

``smoke``
    For continuous integration: every notebook in seconds, tiny data, one epoch.
    The numbers it reaches only prove that the code path runs.
``cpu``
    A laptop or Binder (2 cores, under 2 GB of RAM): each notebook a few
    minutes, results worth reading.
``gpu``
    A course lab with a CUDA GPU: 128-pixel images, thousands of them,
    ResNet-18 and wider U-Nets. Its epochs, grids and seeds are sized so that
    each lesson's training takes under a minute on one H100/H200-class GPU
    by the estimate of ``benchmarks/gpu_plan.py`` (gradient steps priced at
    the launch-bound step time measured there); the real times are measured
    by ``benchmarks/gpu_check.py``.
``auto``
    ``gpu`` when CUDA is available, otherwise ``cpu``.

Each lesson's own knobs (its learning rates, its grid of training-set sizes,
the difficulty of its phantoms) are data too, in :data:`LESSON_KNOBS`, one
dictionary per lesson and profile; a lesson reads them with
``P.knobs("01_transfer_learning")`` (``medlab.setup`` puts them in ``ctx.knobs``).

The environment variable ``MEDLAB_PROFILE_OVERRIDES`` (a JSON object, for
example ``{"n_train": 48, "epochs": 1}``) replaces fields of whichever profile
is resolved; its key ``"lessons"`` replaces single knobs of single lessons,
for example ``{"lessons": {"01_transfer_learning": {"sizes": [12, 48]}}}``.
It exists to check a profile's code path (the ``gpu`` profile's ResNet-18 and
128-pixel images, say) on a machine too small to run it in full.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from .errors import ParameterError

__all__ = ["Profile", "PROFILES", "LESSON_KNOBS", "OVERRIDES_VARIABLE", "resolve", "names"]

OVERRIDES_VARIABLE = "MEDLAB_PROFILE_OVERRIDES"


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets for one kind of machine.

    Every field is a plain number or string so that a notebook can print the
    profile and the runner can record it.
    """

    name: str
    description: str
    image_size: int  # side of square training images, pixels
    n_train: int  # training images (per class where a lesson says so)
    n_val: int  # validation images
    n_test: int  # test images
    epochs: int  # passes over the training set
    batch_size: int
    base_channels: int  # width of the first U-Net / small-CNN stage
    classifier: str  # default classifier architecture for the profile
    seeds: int  # repeats with different seeds where a lesson averages
    bootstrap: int  # bootstrap resamples for confidence intervals
    num_workers: int  # DataLoader workers
    lessons: dict = field(default_factory=dict)  # lesson name -> that lesson's knobs (see LESSON_KNOBS)

    def replace(self, **changes) -> "Profile":
        """Return a copy with some fields changed (unknown names are refused)."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise ParameterError(
                f"unknown profile field(s) {unknown}; valid fields are {sorted(valid)}"
            )
        return dataclasses.replace(self, **changes)

    def knobs(self, lesson: str) -> dict:
        """A copy of ``lesson``'s own knobs in this profile (``{}`` for a lesson that has none).

        Args:
            lesson: the notebook's name, e.g. ``"01_transfer_learning"``.
        """
        return json.loads(json.dumps(self.lessons.get(lesson, {})))

    def as_dict(self) -> dict:
        """The profile as a plain dictionary (for printing and records)."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI check: tiny data, one epoch, seconds per notebook",
        image_size=32,
        n_train=48,
        n_val=16,
        n_test=32,
        epochs=1,
        batch_size=16,
        base_channels=4,
        classifier="smallcnn",
        seeds=1,
        bootstrap=50,
        num_workers=0,
    ),
    "cpu": Profile(
        name="cpu",
        description="laptop or Binder: 2 cores, under 2 GB of RAM, a few minutes per notebook",
        image_size=64,
        n_train=600,
        n_val=150,
        n_test=300,
        epochs=8,
        batch_size=32,
        base_channels=16,
        classifier="smallcnn",
        seeds=3,
        bootstrap=500,
        num_workers=0,
    ),
    "gpu": Profile(
        name="gpu",
        description="course lab with a CUDA GPU: full sizes",
        image_size=128,
        n_train=4000,
        n_val=500,
        n_test=1000,
        epochs=15,
        batch_size=64,
        base_channels=32,
        classifier="resnet18",
        seeds=3,
        bootstrap=2000,
        num_workers=4,
    ),
}


#: Lesson 01's target task: normal against bacterial pneumonia on chest X-ray phantoms, with milder exposure and
#: rotation variation and larger consolidations than the generator's defaults.
_CXR_PNEUMONIA = {"classes": ["normal", "bacterial_pneumonia"], "lesion_contrast": 1.0, "lesion_size": 1.3,
                  "exposure": 0.3, "rotation": 4.0}

#: Each lesson's own knobs, per profile: plain numbers, strings and lists, read by the
#: lesson with ``ctx.knobs`` (or ``P.knobs(name)``). A lesson with no entry has no knobs.
LESSON_KNOBS: dict[str, dict[str, dict]] = {
    # 01: sizes: training-set sizes of the learning curve (the pool is the largest); epochs x samples_per_epoch /
    # batch_size: gradient steps of every run, the same at every size (samples_per_epoch >= the largest size);
    # lr: from scratch; lr_probe: the linear probe's head; lr_backbone / lr_head: fine-tuning's parameter groups;
    # width: first-block channels of the small CNN; pretrain_*: the phantom pretraining (task, images, steps, lr);
    # target_task: the chest X-ray phantom knobs of the target task; ae_*: the autoencoder trained without labels
    # (ae_n: unlabelled target-task images, ae_steps: its gradient steps, ae_lr: AdamW learning rate, cosine
    # schedule; ae_sparsity: weight of the L1 penalty on the code); baseline_C: regularisation strengths tried for the
    # logistic regression on the pixels (best by validation AUROC; cpu runs picked anything from 1e-3 to 1 at 24 and
    # 120 images, always 1e-2 at 600); baseline_size: side (px) the images are average-pooled to before it sees them
    # (None: as they are). gpu pools 128 px to 64 and tries three C: one fit on 4000 binary gpu-size phantoms took
    # 10-17 s at 128 px, 3-7 s at 64 (C = 1e-3 to 1e-1), on a 2-core CPU shared with other jobs (load 5-6)
    "01_transfer_learning": {
        "smoke": {"sizes": [16, 48], "epochs": 1, "samples_per_epoch": 48, "lr": 1e-2, "lr_probe": 1e-2,
                  "lr_backbone": 1e-3, "lr_head": 1e-2, "width": 4, "pretrain_task": "cxr_covid", "pretrain_n": 64,
                  "pretrain_steps": 3, "pretrain_lr": 1e-2, "target_task": _CXR_PNEUMONIA, "ae_n": 48,
                  "ae_steps": 3, "ae_lr": 3e-3, "ae_sparsity": 1e-2, "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
                  "baseline_size": None},
        "cpu": {"sizes": [24, 120, 600], "epochs": 3, "samples_per_epoch": 640, "lr": 1e-2, "lr_probe": 1e-2,
                "lr_backbone": 1e-3, "lr_head": 1e-2, "width": 8, "pretrain_task": "cxr_covid", "pretrain_n": 2000,
                "pretrain_steps": 250, "pretrain_lr": 1e-2, "target_task": _CXR_PNEUMONIA, "ae_n": 2000,
                "ae_steps": 200, "ae_lr": 3e-3, "ae_sparsity": 1e-2, "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
                "baseline_size": None},
        "gpu": {"sizes": [25, 100, 500, 2000], "epochs": 2, "samples_per_epoch": 2048, "lr": 1e-3,
                "lr_probe": 1e-3, "lr_backbone": 3e-4, "lr_head": 1e-3, "width": 32, "pretrain_task": "cxr_covid",
                "pretrain_n": 8000, "pretrain_steps": 1000, "pretrain_lr": 1e-3, "target_task": _CXR_PNEUMONIA,
                "ae_n": 4000, "ae_steps": 500, "ae_lr": 1e-3, "ae_sparsity": 1e-2, "baseline_C": [1e-3, 1e-2, 1e-1],
                "baseline_size": 64},
    },
    # 07: lr: AdamW learning rate; lesion_contrast: of the chest X-ray phantoms (2.25: the cpu small CNN learns the
    # task in its epochs despite the variation); epsilons: attack budgets of the robustness curve (image units, 0 is
    # clean); pgd_steps; n_attack: test images attacked (null: all); attack_batch: images per attack batch; n_cam:
    # images per Grad-CAM figure; n_sanity: images in the randomisation cascade; cascade_stages: columns of the
    # cascade; variation: the chest phantom's variation knobs, as in 03 (pose, deformation, blur_jitter,
    # intensity_mixture, bias), on every split and on the second scanner's test set alike: pose and deformation
    # keep the network short of a perfect score (errors to study) and a linear model on the pixels far behind it;
    # intensity and blur variation stay mild, else training on them makes the model immune to the second scanner
    # (gpu: more pose and deformation and a fainter opacity for the larger model; not measured on a GPU);
    # baseline_C: regularisation strengths tried for the logistic regression on the pixels (best on validation;
    # cpu picked 1e-4 or 1e-3, so gpu stops at 1e-2 and saves two of five slow fits);
    # baseline_size: side (px) the images are average-pooled to before the logistic regression sees them (None:
    # as they are; cpu's 64 px images are kept; gpu pools 128 to 32: see 03 for the fit times)
    "07_trust_and_robustness": {
        "smoke": {"lr": 3e-3, "lesion_contrast": 2.25, "epsilons": [0.0, 0.01, 0.03], "pgd_steps": 3,
                  "n_attack": None, "attack_batch": 128, "n_cam": 4, "n_sanity": 4, "cascade_stages": 6,
                  "variation": {"pose": 1.5, "deformation": 1.5, "blur_jitter": 0.5, "intensity_mixture": 0.3,
                                "bias": 0.05}, "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "cpu": {"lr": 3e-3, "lesion_contrast": 2.25, "epsilons": [0.0, 0.002, 0.005, 0.01, 0.02], "pgd_steps": 5,
                "n_attack": 100, "attack_batch": 128, "n_cam": 8, "n_sanity": 8, "cascade_stages": 6,
                "variation": {"pose": 1.5, "deformation": 1.5, "blur_jitter": 0.5, "intensity_mixture": 0.3,
                              "bias": 0.05}, "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "gpu": {"lr": 1e-3, "lesion_contrast": 2.0, "epsilons": [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04],
                "pgd_steps": 20, "n_attack": 1000, "attack_batch": 128, "n_cam": 8, "n_sanity": 16,
                "cascade_stages": 6, "variation": {"pose": 2.0, "deformation": 2.0, "blur_jitter": 0.5,
                                                   "intensity_mixture": 0.3, "bias": 0.05},
                "baseline_C": [1e-4, 1e-3, 1e-2], "baseline_size": 32},
    },
    # epochs: passes over the training set for the lesson's main model; shortcut_epochs: the same for the two
    # models of the shortcut experiment; lr: AdamW learning rate; width: first-stage channels of the small CNN;
    # marker_correlation: how often the training marker's side follows the label; cam_images: test images shown
    # with Grad-CAM; variation: the chest phantom's variation knobs (pose: extra shift/rotation/scale of the chest,
    # deformation: smooth elastic field, blur_jitter: per-image blur in pixels, intensity_mixture: per-image tissue
    # intensities from a mixture, bias: bias-field strength), what keeps a linear model on the pixels behind;
    # baseline_C: regularisation strengths tried for that logistic regression on the pixels (best on validation;
    # gpu stops at 1e-2: C = 1 was the worst and by far the slowest fit); baseline_size: side (px) the images are
    # average-pooled to before it sees them (None: as they are). gpu pools 128 px to 32: on 4000 gpu-size phantoms
    # on a 2-core CPU one fit took 17 s (C = 1e-4) and 49 s (1e-2) at 128 px, 0.4 s and 1.5 s at 32 px, with no
    # better validation accuracy at 128 px (0.45 and 0.44, against 0.46 and 0.45)
    "03_covid_cxr_classification": {
        "smoke": {"epochs": 1, "shortcut_epochs": 1, "lr": 3e-3, "width": 4, "marker_correlation": 1.0,
                  "cam_images": 4, "variation": {"pose": 1.0, "deformation": 1.0, "blur_jitter": 0.5,
                                                 "intensity_mixture": 0.3, "bias": 0.05},
                  "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "cpu": {"epochs": 12, "shortcut_epochs": 6, "lr": 1e-2, "width": 16, "marker_correlation": 1.0,
                "cam_images": 8, "variation": {"pose": 1.0, "deformation": 1.0, "blur_jitter": 0.5,
                                               "intensity_mixture": 0.3, "bias": 0.05},
                "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "gpu": {"epochs": 20, "shortcut_epochs": 10, "lr": 1e-3, "width": 32, "marker_correlation": 1.0,
                "cam_images": 8, "variation": {"pose": 1.5, "deformation": 1.5, "blur_jitter": 1.0,
                                               "intensity_mixture": 0.6, "bias": 0.1},
                "baseline_C": [1e-4, 1e-3, 1e-2], "baseline_size": 32},
    },
    # Segmentation (02, 04): split sizes n_train/n_val/n_test of the phantoms (a small real data set draws
    # n_train samples per epoch); epochs; batch_size (8 on a CPU: more gradient steps for the same compute);
    # base_channels and depth (down-samplings) of the U-Net; lr: AdamW learning rate. 02 trains three U-Nets.
    "02_segmentation": {
        "smoke": {"n_train": 48, "n_val": 16, "n_test": 32, "epochs": 1, "batch_size": 8, "base_channels": 4,
                  "depth": 2, "lr": 3e-3},
        "cpu": {"n_train": 320, "n_val": 64, "n_test": 200, "epochs": 6, "batch_size": 8, "base_channels": 8,
                "depth": 3, "lr": 3e-3},
        "gpu": {"n_train": 4000, "n_val": 500, "n_test": 1000, "epochs": 15, "batch_size": 64, "base_channels": 16,
                "depth": 4, "lr": 1e-3},
    },
    "04_covid_ct_lesion_segmentation": {
        "smoke": {"n_train": 48, "n_val": 16, "n_test": 32, "epochs": 1, "batch_size": 8, "base_channels": 4,
                  "depth": 2, "lr": 3e-3},
        "cpu": {"n_train": 400, "n_val": 64, "n_test": 200, "epochs": 8, "batch_size": 8, "base_channels": 8,
                "depth": 3, "lr": 3e-3},
        "gpu": {"n_train": 4000, "n_val": 500, "n_test": 1000, "epochs": 20, "batch_size": 64, "base_channels": 32,
                "depth": 4, "lr": 1e-3},
    },
    # 08: stream_images: phantoms drawn in the timed epoch of PhantomStream (section 6)
    "08_benchmark": {
        "smoke": {"stream_images": 256},
        "cpu": {"stream_images": 2048},
        "gpu": {"stream_images": 65536},
    },
    # 05: lr: AdamW learning rate of both frame models; clip_frames: frames per phantom clip; cam_examples:
    # test frames shown with Grad-CAM; pocus_frames: frames sampled from each real video (DATA="pocus");
    # variation: the ultrasound phantom's variation knobs (pose: depth and tilt of the pleural line, wider rib
    # shadows; intensity_mixture: per-image gain and dynamic range from a mixture of machine presets; bias:
    # depth-dependent attenuation and time-gain shading; blur_jitter: per-image blur in pixels; fade: findings of
    # abnormal frames shrink and fade towards invisible), what keeps a linear model on the pixels behind (cpu: pose
    # and fade only; the cpu CNN's CORAL model lost 0.07-0.13 frame accuracy to the other three in 8 epochs);
    # baseline_C: regularisation strengths tried for the logistic regression on the pixels (best on validation;
    # gpu stops at 1e-2, as in 03 and 07: on 4000 gpu-size phantom frames at 32 px, validation accuracy peaked at
    # 1e-2, 0.60, against 0.54 at 1e-1 and 0.52 at 1); baseline_size: side (px) the frames are average-pooled to
    # before it sees them (None: as they are); gpu pools its 128 px frames to 32: there one fit took 3-5 s, at
    # 128 px 51 s (C = 1e-4, validation accuracy 0.58), on a 2-core CPU shared with other jobs
    "05_lung_ultrasound_severity": {
        "smoke": {"lr": 3e-3, "clip_frames": 4, "cam_examples": 4, "pocus_frames": 2,
                  "variation": {"pose": 1.0, "intensity_mixture": 0.3, "bias": 0.1, "blur_jitter": 0.5, "fade": 0.4},
                  "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "cpu": {"lr": 3e-3, "clip_frames": 10, "cam_examples": 8, "pocus_frames": 5,
                "variation": {"pose": 1.0, "intensity_mixture": 0.0, "bias": 0.0, "blur_jitter": 0.0, "fade": 0.4},
                "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "gpu": {"lr": 3e-3, "clip_frames": 16, "cam_examples": 8, "pocus_frames": 10,
                "variation": {"pose": 1.5, "intensity_mixture": 0.5, "bias": 0.2, "blur_jitter": 1.0, "fade": 0.6},
                "baseline_C": [1e-4, 1e-3, 1e-2], "baseline_size": 32},
    },
    # 06: seg_train: training images of the stage-1 U-Net (at most n_train); seg_epochs_fraction: its epochs as a
    # fraction of the profile's epochs (rounded, at least 1); seg_base, seg_depth: its width and down-samplings;
    # lr: AdamW learning rate of every model; crop_size: side of the stage-2 crops; margin: pixels of context
    # around the nodule's box; degrade: severities of the degraded masks in the error-propagation curve; baseline_C:
    # regularisation strengths tried for the logistic regression on the pixels (best by validation AUROC; cpu picked
    # 1e-3 or 1e-2 on the crops, 1e-4 or 1e-3 on whole images); baseline_size: side (px) its inputs are
    # average-pooled to when larger (None: as they are); gpu pools the 128 px whole images to 64 (its 64 px crops stay
    # as they are), as in 01, where that cut one fit on 4000 images from 10-17 s to 3-7 s
    "06_cascade_segment_then_classify": {
        "smoke": {"seg_train": 32, "seg_epochs_fraction": 0.75, "seg_base": 4, "seg_depth": 2, "lr": 3e-3,
                  "crop_size": 16, "margin": 2, "degrade": [0.0, 0.5, 1.0], "baseline_C": [1e-3, 1e-2, 1e-1],
                  "baseline_size": None},
        "cpu": {"seg_train": 300, "seg_epochs_fraction": 0.75, "seg_base": 8, "seg_depth": 3, "lr": 3e-3,
                "crop_size": 32, "margin": 4, "degrade": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                "baseline_C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "baseline_size": None},
        "gpu": {"seg_train": 4000, "seg_epochs_fraction": 0.75, "seg_base": 16, "seg_depth": 4, "lr": 3e-3,
                "crop_size": 64, "margin": 8, "degrade": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0],
                "baseline_C": [1e-3, 1e-2, 1e-1], "baseline_size": 64},
    },
    # 11: n_train/n_val/n_test: patients (table + CT slice each) per split; epochs, lr, width: the image CNN
    # (AdamW, first-stage channels of the small CNN); head_epochs, head_lr, head_hidden: the joint network on
    # image features + table; fusion_grid: image weights tried for late fusion on validation; risk_groups:
    # Kaplan-Meier groups by predicted risk (cut at training quantiles); penalizer: Cox ridge penalty
    "11_images_and_clinical_data": {
        "smoke": {"n_train": 96, "n_val": 48, "n_test": 64, "epochs": 1, "lr": 3e-3, "width": 4, "head_epochs": 2,
                  "head_lr": 3e-3, "head_hidden": 8, "fusion_grid": 5, "risk_groups": 2, "penalizer": 0.1},
        "cpu": {"n_train": 700, "n_val": 200, "n_test": 300, "epochs": 10, "lr": 3e-3, "width": 16,
                "head_epochs": 30, "head_lr": 3e-3, "head_hidden": 16, "fusion_grid": 21, "risk_groups": 3,
                "penalizer": 0.01},
        "gpu": {"n_train": 2400, "n_val": 400, "n_test": 800, "epochs": 15, "lr": 1e-3, "width": 32,
                "head_epochs": 40, "head_lr": 3e-3, "head_hidden": 32, "fusion_grid": 21, "risk_groups": 3,
                "penalizer": 0.01},
    },
    # 09: voxel_mm: phantom voxel size (4 mm: 46 x 54 x 46 voxels); n_train/n_val/n_test: volumes per split;
    # patch: side of the 3D training patches and sliding windows (voxels); foreground: probability that a patch
    # or slice is centred on a lesion voxel; patches: training patches (or slices) per epoch; val_patches: fixed
    # validation patches; batch_size: 3D patches per step; slice_batch: 2D slices per step (about the same voxels);
    # epochs (every network gets epochs * patches // batch_size steps); base_channels, depth: U-Nets (2D and 3D);
    # lr: AdamW; overlap: sliding-window overlap. cls_*: section 8's volume classifier (voxel size, split sizes,
    # small 3D CNN width, batch, lr, epochs) and the inverse L2 strength C of the logistic regression on voxels
    "09_volumes_3d": {
        "smoke": {"voxel_mm": 8.0, "n_train": 4, "n_val": 2, "n_test": 3, "patch": 16, "foreground": 0.9,
                  "patches": 16, "val_patches": 8, "batch_size": 4, "slice_batch": 8, "epochs": 1,
                  "base_channels": 4, "depth": 2, "lr": 5e-3, "overlap": 0.5, "cls_voxel_mm": 8.0,
                  "cls_n_train": 12, "cls_n_val": 6, "cls_n_test": 12, "cls_width": 4, "cls_batch_size": 6,
                  "cls_lr": 3e-3, "cls_epochs": 1, "cls_logreg_c": 0.01},
        "cpu": {"voxel_mm": 4.0, "n_train": 16, "n_val": 4, "n_test": 8, "patch": 24, "foreground": 0.9,
                "patches": 200, "val_patches": 32, "batch_size": 4, "slice_batch": 16, "epochs": 5,
                "base_channels": 8, "depth": 2, "lr": 5e-3, "overlap": 0.5, "cls_voxel_mm": 6.0,
                "cls_n_train": 80, "cls_n_val": 20, "cls_n_test": 60, "cls_width": 8, "cls_batch_size": 8,
                "cls_lr": 3e-3, "cls_epochs": 10, "cls_logreg_c": 0.01},
        "gpu": {"voxel_mm": 3.0, "n_train": 40, "n_val": 8, "n_test": 20, "patch": 32, "foreground": 0.7,
                "patches": 2000, "val_patches": 128, "batch_size": 8, "slice_batch": 32, "epochs": 4,
                "base_channels": 16, "depth": 3, "lr": 2e-3, "overlap": 0.5, "cls_voxel_mm": 4.0,
                "cls_n_train": 240, "cls_n_val": 60, "cls_n_test": 160, "cls_width": 16, "cls_batch_size": 16,
                "cls_lr": 1e-3, "cls_epochs": 20, "cls_logreg_c": 0.01},
    },
    # 10: n_train/n_val/n_test: fundus images per split (validation picks the two operating points, test reports
    # them with bootstrap CIs); epochs, batch_size, lr, width: the CNN on the five grades (AdamW; first-stage channels
    # of the small CNN; small batches on a CPU: more gradient steps for the same compute); baseline_size: side (px)
    # of the images the pixel logistic regression sees; baseline_C: its regularisation strengths tried on
    # validation; baseline_iter: its solver iterations; n_wrong: errors shown
    "10_retinal_screening": {
        "smoke": {"n_train": 60, "n_val": 40, "n_test": 60, "epochs": 1, "batch_size": 16, "lr": 3e-3, "width": 4,
                  "baseline_size": 32, "baseline_C": [0.01], "baseline_iter": 100, "n_wrong": 3},
        "cpu": {"n_train": 600, "n_val": 300, "n_test": 500, "epochs": 10, "batch_size": 16, "lr": 3e-3, "width": 16,
                "baseline_size": 64, "baseline_C": [0.01, 0.1, 1.0], "baseline_iter": 500, "n_wrong": 5},
        "gpu": {"n_train": 3000, "n_val": 600, "n_test": 1000, "epochs": 15, "batch_size": 64, "lr": 1e-3, "width": 32,
                "baseline_size": 64, "baseline_C": [0.01, 0.1, 1.0], "baseline_iter": 500, "n_wrong": 5},
    },
}

for _name, _profile in PROFILES.items():
    PROFILES[_name] = _profile.replace(lessons={lesson: dict(per_profile.get(_name, {}))
                                                for lesson, per_profile in LESSON_KNOBS.items()})


def names() -> list[str]:
    """The names :func:`resolve` accepts, ``auto`` included."""
    return [*PROFILES, "auto"]


def resolve(name: str = "auto", cuda_available: bool | None = None) -> Profile:
    """Return the profile called ``name``.

    Args:
        name: ``smoke``, ``cpu``, ``gpu`` or ``auto`` (case-insensitive).
        cuda_available: for ``auto``, whether a CUDA GPU is there; by default
            ``torch.cuda.is_available()`` decides.

    Fields named in the environment variable ``MEDLAB_PROFILE_OVERRIDES``
    (a JSON object) replace the profile's own.

    Raises:
        ParameterError: ``name`` is not a known profile (the message lists
            them), or ``MEDLAB_PROFILE_OVERRIDES`` is not a JSON object of known
            fields.
    """
    if isinstance(name, Profile):
        return name
    key = str(name).strip().lower()
    if key == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        key = "gpu" if cuda_available else "cpu"
    if key not in PROFILES:
        raise ParameterError(
            f"unknown profile {name!r}; valid profiles are {', '.join(names())}"
        )
    return _apply_overrides(PROFILES[key])


def _apply_overrides(profile: Profile) -> Profile:
    """``profile`` with the fields from ``MEDLAB_PROFILE_OVERRIDES`` replaced."""
    text = os.environ.get(OVERRIDES_VARIABLE, "").strip()
    if not text:
        return profile
    try:
        changes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(
            f"{OVERRIDES_VARIABLE} must be a JSON object such as '{{\"n_train\": 48}}', got {text!r} ({exc})"
        ) from None
    if not isinstance(changes, dict):
        raise ParameterError(f"{OVERRIDES_VARIABLE} must be a JSON object of profile fields, got {text!r}")
    lessons = changes.pop("lessons", None)
    if lessons is not None:
        if not isinstance(lessons, dict) or not all(isinstance(v, dict) for v in lessons.values()):
            raise ParameterError(f"{OVERRIDES_VARIABLE}: 'lessons' must map lesson names to objects of knobs, "
                                 f"got {lessons!r}")
        merged = {name: dict(knobs) for name, knobs in profile.lessons.items()}
        for name, knobs in lessons.items():
            unknown = sorted(set(knobs) - set(merged.get(name, {})))
            if unknown:
                raise ParameterError(f"{OVERRIDES_VARIABLE}: lesson {name!r} has no knob(s) {unknown}; "
                                     f"its knobs are {sorted(merged.get(name, {}))}")
            merged[name].update(knobs)
        changes["lessons"] = merged
    return profile.replace(**changes)
