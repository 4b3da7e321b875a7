"""Training and fine-tuning: DATA folders, synthetic CT from label maps, the MONAI training loop.

>>> from medseg.training import discover_cases, train, TrainConfig          # doctest: +SKIP
>>> data = discover_cases("corrected_cases/")                                 # doctest: +SKIP
>>> result = train(data, "my_model", config=TrainConfig(epochs=20), parent="default")  # doctest: +SKIP

``train`` writes a medseg model folder (loadable by ``medseg segment --model``) with checkpoints
every epoch; running it again on the same folder resumes. The data layouts are described in
``docs/training.md`` and :mod:`medseg.training.datasets`; the shipped default model is built by
:mod:`medseg.training.default_model`.

Importing this package imports torch and MONAI (it is the training stack); the CLI imports it
inside ``medseg train``'s ``run`` only.
"""

from medseg.training.config import TrainConfig, TrainResult
from medseg.training.datasets import (CORRECTED_FILES, DatasetDescription, TrainingCase, discover_cases,
                                      read_label_names)
from medseg.training.loop import train
from medseg.training.synth import SynthesisSettings

__all__ = ["train", "TrainConfig", "TrainResult", "discover_cases", "DatasetDescription", "TrainingCase",
           "read_label_names", "SynthesisSettings", "CORRECTED_FILES"]
