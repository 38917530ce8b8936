"""Preprocessing: canonical orientation, one VOI per orbit, CT window, slice sequences — and the way back."""
