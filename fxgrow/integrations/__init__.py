"""Growth inside training frameworks: ``fxgrow.integrations.hf.GrowCallback`` (a
``transformers.TrainerCallback``) and ``fxgrow.integrations.lightning.GrowCallback`` (a
Lightning ``Callback``; Lightning is an optional extra).  What they share is in ``common``."""
