"""Training: recipes, losses, the loop, distillation, cross-validation and label imputation."""
