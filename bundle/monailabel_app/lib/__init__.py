"""Task adapters of the MONAI Label app (infer, scoring, strategy, train)."""
