"""Recipes that build the shipped default model and measure it (scripts, run with ``python -m``).

``python -m medseg.recipes.default_v2 --work runs/v2``
    Train (or resume) the default model, recipe v2: images generated from every real label map
    in ``../shared/data`` plus the real image/label pairs (see ``docs/model_card.md``).
``python -m medseg.recipes.heldout --model default -o results/heldout-v2``
    Every number of the model card: per-organ Dice / HD95 / NSD on each held-out real scan,
    false lesion components, the blank-volume and chest-only checks, failure montages.

Modules: :mod:`~medseg.recipes.cases` (the held-out real scans and their references),
:mod:`~medseg.recipes.lung_reference` (lungs from HU where a scan has no lung labels),
:mod:`~medseg.recipes.heldout` and :mod:`~medseg.recipes.default_v2`.
"""
