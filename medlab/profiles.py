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
    A course lab with a CUDA GPU: full sizes.
``auto``
    ``gpu`` when CUDA is available, otherwise ``cpu``.

Each lesson's own knobs (its learning rates, its grid of training-set sizes,
the difficulty of its phantoms) are data too, in :data:`LESSON_KNOBS`, one
dictionary per lesson and profile; a lesson reads them with
``P.knobs("01_transfer_learning")`` (``medlab.setup`` puts them in ``ctx.knobs``).

The environment variable ``MEDLAB_PROFILE_OVERRIDES`` (a JSON object, for
example ``{"n_train": 48, "epochs": 1}``) replaces fields of whichever profile
is resolved; its key ``"lessons"`` replaces single knobs of single lessons,
for example ``{"lessons": {"01_transfer_learning": {"sizes": [12, 48]}}}``. It exists to check a profile's code path (the ``gpu`` profile's
ResNet-18 and 128-pixel images, say) on a machine too small to run it in full.
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
        epochs=30,
        batch_size=64,
        base_channels=32,
        classifier="resnet18",
        seeds=5,
        bootstrap=2000,
        num_workers=4,
    ),
}


#: Each lesson's own knobs, per profile: plain numbers, strings and lists, read by the
#: lesson with ``ctx.knobs`` (or ``P.knobs(name)``). A lesson with no entry has no knobs.
LESSON_KNOBS: dict[str, dict[str, dict]] = {
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
