"""Lifecycle area: pretraining; per surface fine-tuning, publication, canary and promotion; the
drift sensor."""
