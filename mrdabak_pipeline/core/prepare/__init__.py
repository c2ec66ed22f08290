"""Stage 2, prepare: cleaning with quarantine reasons, PII pseudonymization, augmentation, the stage runners."""
