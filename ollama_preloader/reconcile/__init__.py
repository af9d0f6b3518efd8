"""Deciding and acting: desired vs observed state, the loop, loading and pulling."""
