"""vae: train, sample, reconstruct and evaluate VAEs from the command line."""
