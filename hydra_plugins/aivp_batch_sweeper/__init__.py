"""Hydra sweeper plugin of aivp-batch: plans and prices a whole sweep before any member spends."""
