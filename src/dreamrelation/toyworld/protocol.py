"""The fixed numbers of the toy world's evaluation protocols: seeds and the codec's acceptance bar.

Import-free on purpose: the `dreamrelation toy` commands show some of them as flag defaults in
``--help``, which must answer without loading torch (the library modules that use them do).
"""

from __future__ import annotations

#: prompt seed of the base model's calibration protocol (used while developing a recipe)
CALIBRATION_PROMPT_SEED = 2025
#: prompt seed of the base model's acceptance evaluation (never looked at while developing a recipe)
ACCEPTANCE_PROMPT_SEED = 90210
#: prompt seed of the next base's acceptance, fixed on 2026-12-05 before any model was scored on it:
#: 90210 has by then scored the fourth and fifth stages, so a base chosen after them is judged here too
FRESH_ACCEPTANCE_PROMPT_SEED = 271828

#: the fidelity and relation accuracy the oracle must keep on round-tripped ground truth (issue 8)
ACCEPTANCE_THRESHOLD = 0.98
#: scene seed of the codec's acceptance evaluation (never a training batch: those are seeded by (seed, step))
ACCEPTANCE_SEED = 60606
#: scene seed of the codec's progress check during training (not the acceptance seed)
VALIDATION_SEED = 5151
