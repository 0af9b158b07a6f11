"""Training: forking tokens, models, matching, the loss and the SSFT Trainer."""
