"""IMKD distillation: BEV intensity maps and the losses of the three stages."""
