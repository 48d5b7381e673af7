"""Modeling files copied into demo checkpoints for trust_remote_code; never imported by rmcluster itself."""
