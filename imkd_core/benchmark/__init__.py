"""Benchmarks that train and score models end to end: `imkd benchmark kd`, the distillation
benchmark of issue 15 (spec: `spec`, runner: `kd`, report and plots: `report`)."""
