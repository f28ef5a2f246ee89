"""Hydra search-path plugin of aivp-batch: puts the user's own config layer ahead of the packaged one."""
