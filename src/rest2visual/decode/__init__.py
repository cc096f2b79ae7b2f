"""Decoding: predicted and measured betas in the form image decoders of the field read."""
